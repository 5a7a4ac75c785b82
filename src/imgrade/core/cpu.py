"""What this CPU computes natively, read from /proc/cpuinfo: the flags that decide bf16 work.

Training's mixed precision (``core/perf.py``) and the bf16 grading runtime (``runtime/openvino_engine.py``)
both ask here. This module never imports torch. Without /proc/cpuinfo (macOS, Windows) no flag is known,
so the answer is always "not native".
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of x86 CPUs that compute in bf16 natively (AVX512-BF16, AMX)."""


def _cpuinfo(cpuinfo: str | None) -> str:
    if cpuinfo is not None:
        return cpuinfo
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The first processor's flags (``cpuinfo``: the text of /proc/cpuinfo, read if None).

    >>> sorted(cpu_flags("processor\\t: 0\\nflags\\t\\t: fpu avx2 fma\\n"))
    ['avx2', 'fma', 'fpu']
    """
    for line in _cpuinfo(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name, or "unknown CPU".

    >>> cpu_model("model name\\t: AMD EPYC 9B14\\n"), cpu_model("")
    ('AMD EPYC 9B14', 'unknown CPU')
    """
    for line in _cpuinfo(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return "unknown CPU"


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (``cpuinfo``: the text of /proc/cpuinfo, read if None).

    Elsewhere bf16 is emulated, more slowly than fp32; without /proc/cpuinfo the answer is no.

    >>> cpu_has_bf16("flags\\t: fpu avx2 avx512f avx512_bf16"), cpu_has_bf16("flags\\t: fpu avx2 avx512f")
    (True, False)
    """
    return any(flag in cpu_flags(cpuinfo) for flag in BF16_CPU_FLAGS)
