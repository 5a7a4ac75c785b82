"""The header benchmarks/throughput.py prints: the CPU's flags and both peaks (benchmarks/peaks.py).

CPUs with native bf16 are faked through /proc/cpuinfo's text, as imgrade.core.perf reads it.
"""

import doctest

import peaks  # benchmarks/peaks.py: tests/conftest.py puts benchmarks/ on the path
from peaks import Peak, describe_cpu, header_lines, measure_peaks

AVX2_CPU = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
AMX_CPU = (
    "model name\t: Intel(R) Xeon(R) Platinum 8481C\n"
    "flags\t\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni\n"
)


def test_doctests_pass():
    assert doctest.testmod(peaks).failed == 0


def test_cpu_without_bf16_lists_what_it_lacks():
    line = describe_cpu(AVX2_CPU)
    assert line.startswith("cpu: AMD EPYC; flags: avx2 fma; absent: ")
    assert "avx512_bf16" in line.split("absent: ")[1]
    assert line.endswith("(no native bf16: it needs avx512_bf16 or amx_bf16)")


def test_cpu_with_amx_lists_its_flags_and_no_absence():
    line = describe_cpu(AMX_CPU)
    flags = "avx2 fma avx_vnni avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8"
    assert line == f"cpu: Intel(R) Xeon(R) Platinum 8481C; flags: {flags}"


def test_cpu_without_cpuinfo():
    assert describe_cpu("").startswith("cpu: unknown CPU; flags: none of avx2 fma")


def test_header_gives_both_peaks_and_their_ratio():
    fp32 = Peak("fp32", {"matmul 2048": 480.0, "conv3x3 channels_last batch 64": 400.0})
    bf16 = Peak("bf16", {"matmul 2048": 3168.0, "conv3x3 channels_last batch 64": 2000.0})
    lines = header_lines({"fp32": fp32, "bf16": bf16}, AMX_CPU)
    assert lines[1:] == [
        "fp32 peak 480 GFLOP/s (matmul 2048 480, conv3x3 channels_last batch 64 400)",
        "bf16 peak 3168 GFLOP/s (matmul 2048 3168, conv3x3 channels_last batch 64 2000)",
        "bf16 / fp32 peak: 6.60x",
    ]


def test_tiny_measurement_marks_emulated_bf16():
    measured = measure_peaks(repeats=1, cpuinfo=AVX2_CPU)
    assert set(measured) == {"fp32", "bf16"}
    assert not measured["fp32"].emulated and measured["bf16"].emulated
    assert set(measured["bf16"].gflops) == {"matmul 512", "conv3x3 channels_last batch 8"}
    assert set(measured["fp32"].gflops) == {"matmul 2048", "conv3x3 channels_last batch 64"}
    assert all(value > 0 for peak in measured.values() for value in peak.gflops.values())
    lines = header_lines(measured, AVX2_CPU)
    assert len(lines) == 4 and lines[0].startswith("cpu: AMD EPYC")
    assert lines[2].startswith("bf16 peak ") and lines[2].endswith(
        "emulated: no native bf16 in this CPU's flags, smaller sizes"
    )
