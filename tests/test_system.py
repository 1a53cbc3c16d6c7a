"""crl.system: the allocator setting and the bf16-units probe."""

import sys

import pytest

from crl import system


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_applies_on_glibc_and_can_be_switched_off(monkeypatch):
    assert system.keep_freed_memory() is True
    monkeypatch.setenv("CRL_KEEP_FREED_MEMORY", "0")
    assert system.keep_freed_memory() is False


@pytest.mark.parametrize("flags, expected", [("fpu avx512f amx_bf16 amx_tile", True),
                                             ("fpu avx2 avx512_bf16", True),
                                             ("fpu avx2 avx512f", False)])
def test_cpu_has_bf16_units_reads_the_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
    assert system.cpu_has_bf16_units(str(cpuinfo)) is expected
    assert system.cpu_has_bf16_units(str(tmp_path / "missing")) is False
