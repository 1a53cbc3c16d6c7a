"""Process-level settings that make CPU training faster: the allocator, and whether the CPU has
native bfloat16 matrix units; and the CPU's name (cpu_name, cpu_label) for records of a run.

glibc serves every block over its mmap threshold (at most 32 MiB; one batch of conv activations is
55 MiB) with a fresh mmap and returns it to the kernel on free, so every update faults its
activations in again, page by page. Keeping freed memory in the heap for reuse (what jemalloc and
tcmalloc do, and what PyTorch's CPU tuning guide recommends them for) made a DrQ-v2 update at
batch 256 1.37x faster on a 2-core Intel CPU, and the reference implementation's 2x (BENCHMARKS.md,
the "Agent updates" sections, with and without it). The cost: the process keeps its peak heap
instead of returning it. `crl` commands and the training benchmarks call
:func:`keep_freed_memory` first; set ``CRL_KEEP_FREED_MEMORY=0`` to leave glibc's default.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve large blocks from the heap and keep freed memory (up to 2 GiB at
    the heap's top) for reuse. True when applied; False off Linux/glibc or when
    ``CRL_KEEP_FREED_MEMORY=0``."""
    if os.environ.get("CRL_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (/proc/cpuinfo's first "model name"; else what platform reports)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_label() -> str:
    """The CPU's name and its widest matrix units: one model name (e.g. "AMD EPYC") covers CPUs
    with and without bf16 units, whose timings differ several-fold."""
    flags = cpu_flags()
    units = ("AMX" if "amx_bf16" in flags else "AVX-512 BF16" if "avx512_bf16" in flags
             else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None)
    return f"{cpu_name()}, {units}" if units else cpu_name()


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (the first "flags" line of /proc/cpuinfo; none where it is missing)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_has_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX512-BF16 in /proc/cpuinfo's flags;
    False where that file is missing). Where it lacks them, bf16 is emulated and far slower than
    fp32; where it has them, bf16 convs may still not be faster (crl.encoders.cpu_bf16_conv_speedup)."""
    return bool(cpu_flags(cpuinfo) & {"amx_bf16", "avx512_bf16"})
