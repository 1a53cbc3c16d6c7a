"""What every benchmark script shares: the machine line, the command, and BENCHMARKS.md sections."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from crl.fileio import atomic_write_bytes
from crl.system import cpu_name

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine_line() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}; "
            f"date {datetime.date.today().isoformat()}; 1-min load average before the run {load:.2f}.")


def command_line() -> str:
    """The command that produced a result, with paths relative to the repository."""
    def relative(path: str) -> str:
        resolved = Path(path).absolute() if os.sep in path else Path(path)  # venv python is a symlink
        return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else Path(path).name

    return shlex.join([relative(sys.executable), relative(sys.argv[0]), *sys.argv[1:]])


def write_section(title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replaces (or appends) the `## title` section atomically, keeping every other section."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_bytes(path, text.encode())


def wall_times(fn, reps: int, warmup: int = 1) -> list[float]:
    """Wall time of each of `reps` calls of `fn()`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved_wall_times(fns: dict, reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each of `fns`' calls, timed in turns (one call of each per round, after
    `warmup` untimed rounds) so that a slow spell of a shared machine falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name] += wall_times(fn, 1, warmup=0)
    return times


def median_seconds(fn, reps: int, warmup: int = 1) -> float:
    return statistics.median(wall_times(fn, reps, warmup))


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 5, warmup: int = 1) -> float:
    """This CPU's matmul peak in `dtype`: the best of `reps` n x n products into a fixed output."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    best = min(wall_times(lambda: torch.mm(a, b, out=out), reps, warmup))
    return 2 * n**3 / best / 1e9
