"""Replay benchmark: memory per stored transition and sampling time against one critic update.

1. Bytes per stored transition of crl.replay for 3x84x84 uint8 frames with frame stack 3, against
   one frame + scalars, DrQ-v2's layout (the stacked obs stored every step: ~3x) and CURL's
   (stacked obs and stacked next obs every step: ~6x).
2. Time to sample a batch of 256 stacked obs + next obs (9x84x84) from a replay of ~20k frames,
   against one forward + backward + Adam step of a pixel SAC-style critic at batch 256 (stand-in:
   4 conv 3x3 / 32 filters, first stride 2, ReLU, Linear -> LayerNorm 50, twin 1024-hidden Q heads).

    .venv/bin/python experiments/bench_replay.py            # print the tables
    .venv/bin/python experiments/bench_replay.py --write    # and update BENCHMARKS.md (## Replay)

Exit status 1 if a target is missed (DrQ-v2 ratio >= 2.9x, CURL ratio >= 5.8x, sampling < 10% of
the critic update, crl.replay <= 1.05 x one frame + scalars).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crl.replay import EpisodeReplay

ROOT = Path(__file__).resolve().parents[1]
FRAME = (3, 84, 84)
STACK = 3
ACTION_DIM = 6
BATCH = 256


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def random_episode(steps: int, rng: np.random.Generator) -> dict:
    return {
        "observations": rng.integers(0, 256, (steps + 1, *FRAME), dtype=np.uint8),
        "actions": rng.uniform(-1, 1, (steps, ACTION_DIM)).astype(np.float32),
        "rewards": rng.random(steps, dtype=np.float32),
        "truncated": np.arange(steps) == steps - 1,
    }


def fill(replay: EpisodeReplay, episodes: int, steps: int, rng: np.random.Generator) -> None:
    """Bulk-load random pixel episodes (single frames)."""
    for _ in range(episodes):
        replay.add_episode(**random_episode(steps, rng))


def memory_rows(steps: int, rng: np.random.Generator) -> dict:
    """Bytes per transition of a replay filled to capacity with ``steps``-step episodes."""
    episodes = 10
    episode = random_episode(steps, rng)  # made before measuring: RSS growth is the replay's own
    before = rss_bytes()
    replay = EpisodeReplay(capacity=episodes * (steps + 1), frame_stack=STACK)
    for _ in range(episodes):
        replay.add_episode(**episode)
    assert replay.num_frames == replay.capacity
    rss = (rss_bytes() - before) / len(replay)
    ours = replay.nbytes / len(replay)
    frame = int(np.prod(FRAME))
    scalars = 4 * ACTION_DIM + 4 + 1 + 1  # action, reward, terminated, truncated
    return {
        "steps": steps, "ours": ours, "rss": rss, "one_frame": frame + scalars,
        "drqv2": STACK * frame + scalars, "curl": 2 * STACK * frame + scalars,
    }


class Critic(nn.Module):
    """Stand-in pixel SAC critic: conv encoder -> 50-d LayerNorm feature -> twin Q MLPs."""

    def __init__(self, channels: int = STACK * 3, action_dim: int = ACTION_DIM, feature: int = 50,
                 hidden: int = 1024):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
        )
        self.trunk = nn.Sequential(nn.Linear(32 * 35 * 35, feature), nn.LayerNorm(feature), nn.Tanh())
        self.q = nn.ModuleList(
            nn.Sequential(nn.Linear(feature + action_dim, hidden), nn.ReLU(),
                          nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            for _ in range(2)
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(obs.float() / 255.0)
        z = self.trunk(h.flatten(1))
        za = torch.cat([z, action], dim=1)
        return self.q[0](za), self.q[1](za)


def time_critic(batch: dict, channels_last: bool, reps: int) -> float:
    torch.manual_seed(0)
    critic = Critic()
    obs = batch["obs"]
    if channels_last:
        critic = critic.to(memory_format=torch.channels_last)
        obs = obs.contiguous(memory_format=torch.channels_last)
    optim = torch.optim.Adam(critic.parameters(), lr=1e-4)
    target = torch.randn(BATCH, 1)

    def step():
        q1, q2 = critic(obs, batch["action"])
        loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return median_seconds(step, reps, warmup=2)


def median_seconds(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(args) -> tuple[str, bool]:
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(0)

    mem = [memory_rows(steps, rng) for steps in (500, 125)]

    steps = 500
    replay = EpisodeReplay(capacity=40 * (steps + 1), frame_stack=STACK, seed=0)
    fill(replay, 40, steps, rng)
    sample_1 = median_seconds(lambda: replay.sample_transitions(BATCH, n_step=1), args.reps)
    sample_3 = median_seconds(lambda: replay.sample_transitions(BATCH, n_step=3, gamma=0.99), args.reps)
    batch = replay.sample_transitions(BATCH)
    critic = {layout: time_critic(batch, layout == "channels_last", args.critic_reps)
              for layout in ("contiguous", "channels_last")}
    fastest = min(critic.values())
    sample = max(sample_1, sample_3)

    m = mem[0]
    checks = {
        "crl.replay <= 1.05 x one frame + scalars": m["ours"] <= 1.05 * m["one_frame"],
        "DrQ-v2 layout / crl.replay >= 2.9x": m["drqv2"] / m["ours"] >= 2.9,
        "CURL layout / crl.replay >= 5.8x": m["curl"] / m["ours"] >= 5.8,
        "sampling < 10% of the critic update": sample / fastest < 0.10,
    }

    lines = [
        "Memory per stored transition: 3x84x84 uint8 frames, frame stack 3, 6-d float32 actions, "
        "replay filled to capacity with 10 episodes (T = 500: DMC at action repeat 2; T = 125: "
        "cartpole at action repeat 8). Other layouts computed from their per-step arrays.",
        "",
        "| layout | bytes / transition (T=500) | vs crl.replay | bytes / transition (T=125) | vs crl.replay |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = [("crl.replay (each frame once; allocated)", "ours"),
            ("crl.replay, measured RSS growth", "rss"),
            ("one frame + scalars", "one_frame"),
            ("DrQ-v2 (stacked obs per step)", "drqv2"),
            ("CURL (stacked obs + next obs per step)", "curl")]
    for label, key in rows:
        cells = [f"{r[key]:,.0f} | {r[key] / r['ours']:.2f}x" for r in mem]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += [
        "",
        f"Sampling from a replay of {replay.num_frames:,} frames ({replay.num_episodes} episodes of "
        f"{steps} steps) against one critic update, batch {BATCH}, medians of {args.reps} samples / "
        f"{args.critic_reps} updates (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        "flush denormals on).",
        "",
        "| operation | time (ms) | vs fastest critic update |",
        "|---|---:|---:|",
        f"| sample 256 obs + next obs (9x84x84 uint8), n = 1 | {sample_1 * 1e3:.2f} | {sample_1 / fastest:.2%} |",
        f"| sample 256 obs + next obs, n = 3 (n-step returns) | {sample_3 * 1e3:.2f} | {sample_3 / fastest:.2%} |",
    ]
    for layout, seconds in critic.items():
        lines.append(f"| critic forward + backward + Adam, {layout} | {seconds * 1e3:.0f} | "
                     f"{seconds / fastest:.2f}x |")
    lines += ["", "| target | result |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in checks.items()]
    return "\n".join(lines), all(checks.values())


def command_line() -> str:
    python = Path(sys.executable)
    try:
        python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else Path(python.name)
    except ValueError:
        python = Path(python.name)
    script = Path(sys.argv[0]).resolve()
    script = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join([str(python), str(script), *sys.argv[1:]])


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the `## Replay` section, keeping the other sections intact."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## Replay\n\n{body.strip()}\n"
    pattern = re.compile(r"^## Replay[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update the ## Replay section of BENCHMARKS.md")
    parser.add_argument("--reps", type=int, default=30, help="timed samples per measurement")
    parser.add_argument("--critic-reps", type=int, default=5, help="timed critic updates per layout")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    table, ok = run(args)
    header = (f"Command: `{command_line()}`  \n"
              f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs; numpy {np.__version__}; "
              f"date {datetime.date.today().isoformat()}; 1-min load average before the run "
              f"{load:.2f} (other processes on the same cores slow the critic timings).")
    body = header + "\n\n" + table
    print(body)
    if args.write:
        write_section(args.output, body)
        print(f"\nwrote the ## Replay section of {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
