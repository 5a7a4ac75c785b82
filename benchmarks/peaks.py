"""The CPU's peak GFLOP/s in fp32 and in bf16, measured side by side, and the flags that explain them.

Usage:
    python benchmarks/peaks.py [--repeats 5]

A precision's peak is the faster of a large matmul and a channels_last 3x3 convolution in that
precision, best of several calls. Both precisions are measured in the same rounds, one after the
other, so a busy moment lowers both alike. Other benchmarks can import :func:`measure_peaks` to
state their speeds as shares of these peaks (``throughput.py`` does).

On a CPU without native bf16 (no ``avx512_bf16`` or ``amx_bf16`` flag) torch emulates bf16, far
more slowly than fp32: a 2048 x 2048 bf16 matmul took about 100 s on a 2-core AVX2 EPYC (0.3 s in
fp32). There the bf16 operations run at a smaller size (``EMULATED_SIZES``), and the bf16 peak is
reported as emulated. Nothing is written.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from imgrade.core.cpu import BF16_CPU_FLAGS, cpu_flags, cpu_has_bf16, cpu_model

CPU_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
"""/proc/cpuinfo flags that decide how fast fp32, bf16 and int8 compute, in the order printed."""

SIZES = {"matmul": 2048, "conv batch": 64}
"""Problem sizes: an n x n matmul, and a 64 -> 64 channel 3x3 convolution on 32 x 32 for a batch."""

EMULATED_SIZES = {"matmul": 512, "conv batch": 8}
"""The sizes for bf16 on a CPU without native bf16: a call stays well under a second."""

CALLS_PER_ROUND = 3


@dataclass(frozen=True)
class Peak:
    """One precision's measured peak."""

    precision: str
    """"fp32" or "bf16"."""

    gflops: dict[str, float]
    """GFLOP/s of each operation (named with its size), the best of its calls."""

    emulated: bool = False
    """bf16 on a CPU without native bf16, where torch emulates it (and smaller sizes are used)."""

    @property
    def best(self) -> float:
        """GFLOP/s of the faster operation: the peak."""
        return max(self.gflops.values())

    def describe(self) -> str:
        """One line: the peak and what each operation gave.

        >>> Peak("fp32", {"matmul 2048": 101.4, "conv3x3 channels_last batch 64": 60.2}).describe()
        'fp32 peak 101 GFLOP/s (matmul 2048 101, conv3x3 channels_last batch 64 60)'
        """
        ops = ", ".join(f"{name} {value:.0f}" for name, value in self.gflops.items())
        note = ", emulated: no native bf16 in this CPU's flags, smaller sizes" if self.emulated else ""
        return f"{self.precision} peak {self.best:.0f} GFLOP/s ({ops}){note}"


def _matmul(dtype: torch.dtype, n: int) -> tuple[Callable[[], object], float]:
    """An n x n matmul in ``dtype`` and its FLOPs."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return lambda: torch.mm(a, b), 2 * n**3


def _conv(dtype: torch.dtype, batch: int) -> tuple[Callable[[], object], float]:
    """A channels_last 3x3 convolution, 64 -> 64 channels on 32 x 32, in ``dtype``, and its FLOPs."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, 64, 32, 32, dtype=dtype).to(memory_format=torch.channels_last)
    return lambda: conv(x), 2 * batch * 64 * 64 * 9 * 32 * 32


@torch.no_grad()
def measure_peaks(repeats: int = 5, cpuinfo: str | None = None) -> dict[str, Peak]:
    """{"fp32": Peak, "bf16": Peak}: each operation's best of ``repeats`` rounds of a few calls.

    Args:
        repeats: rounds; each runs every operation of both precisions ``CALLS_PER_ROUND`` times.
        cpuinfo: the text of /proc/cpuinfo, to decide whether bf16 is emulated (read if None).
    """
    emulated = not cpu_has_bf16(cpuinfo)
    operations = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        sizes = EMULATED_SIZES if precision == "bf16" and emulated else SIZES
        operations[precision, f"matmul {sizes['matmul']}"] = _matmul(dtype, sizes["matmul"])
        operations[precision, f"conv3x3 channels_last batch {sizes['conv batch']}"] = _conv(dtype, sizes["conv batch"])
    for step, _ in operations.values():
        step()  # warm-up: oneDNN picks and builds its kernels on the first call
    best = dict.fromkeys(operations, 0.0)
    for _ in range(repeats):
        for key, (step, flops) in operations.items():
            for _ in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                step()
                best[key] = max(best[key], flops / (time.perf_counter() - start) / 1e9)
    return {
        precision: Peak(
            precision,
            {name: value for (p, name), value in best.items() if p == precision},
            emulated=precision == "bf16" and emulated,
        )
        for precision in ("fp32", "bf16")
    }


def describe_cpu(cpuinfo: str | None = None) -> str:
    """One line: the CPU's model name, which of ``CPU_FLAGS`` it has, and which it lacks.

    Args:
        cpuinfo: the text of /proc/cpuinfo, read if None.

    >>> describe_cpu("model name\\t: AMD EPYC\\nflags\\t\\t: fpu avx2 fma")
    'cpu: AMD EPYC; flags: avx2 fma; absent: avx_vnni avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8 (no native bf16: it needs avx512_bf16 or amx_bf16)'
    """
    flags = cpu_flags(cpuinfo)
    present = [flag for flag in CPU_FLAGS if flag in flags]
    absent = [flag for flag in CPU_FLAGS if flag not in flags]
    line = f"cpu: {cpu_model(cpuinfo)}; flags: {' '.join(present) or 'none of ' + ' '.join(CPU_FLAGS)}"
    if absent:
        line += f"; absent: {' '.join(absent)}"
    if not cpu_has_bf16(cpuinfo):
        line += f" (no native bf16: it needs {' or '.join(BF16_CPU_FLAGS)})"
    return line


def header_lines(peaks: dict[str, Peak], cpuinfo: str | None = None) -> list[str]:
    """The lines benchmarks print above their rows: the CPU (:func:`describe_cpu`), both peaks, their ratio."""
    fp32, bf16 = peaks["fp32"], peaks["bf16"]
    return [
        describe_cpu(cpuinfo),
        fp32.describe(),
        bf16.describe(),
        f"bf16 / fp32 peak: {bf16.best / fp32.best:.2f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of calls; the best is kept (default 5)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\n".join(header_lines(measure_peaks(args.repeats))))


if __name__ == "__main__":
    main()
