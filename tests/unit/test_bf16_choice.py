"""Which runtime grades an .onnx file, by the CPU's flags and the file's bf16 check (no OpenVINO needed)."""

import argparse
import math

import pytest

from imgrade.cli import may_run_openvino
from imgrade.core import cpu as cpu_info
from imgrade.runtime import onnx_runtime_for
from imgrade.runtime.bf16_check import MIN_AGREEMENT, Bf16Check

AMX = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
PLAIN = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n"


def check(**changes) -> Bf16Check:
    """A check that passes (200 photos, bf16 3.6x faster, the same numbers), with ``changes``."""
    fields = dict(
        n=200,
        precision="bf16",
        fp32_accuracy=0.630,
        fp32_qwk=0.820,
        bf16_accuracy=0.630,
        bf16_qwk=0.820,
        agreement=0.995,
        accuracy_tolerance=0.01,
        qwk_tolerance=0.01,
        fp32_rate=1976.0,
        bf16_rate=7133.0,
    )
    return Bf16Check(**{**fields, **changes})


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    """Make /proc/cpuinfo read as the given text."""

    def use(text: str) -> None:
        (tmp_path / "cpuinfo").write_text(text)
        monkeypatch.setattr(cpu_info, "CPUINFO", tmp_path / "cpuinfo")

    return use


def test_the_flags_of_amx_and_avx512_bf16_cpus_are_native_bf16(fake_cpu):
    for text, native in ((AMX, True), (AVX512_BF16, True), (PLAIN, False), ("", False)):
        fake_cpu(text)
        assert cpu_info.cpu_has_bf16() is native, text
    fake_cpu(AMX)
    assert cpu_info.cpu_model() == "Intel(R) Xeon(R) Platinum 8481C"
    assert {"amx_bf16", "amx_int8", "avx2"} <= cpu_info.cpu_flags()


def test_a_check_passes_only_with_agreement_accuracy_qwk_bf16_and_speed():
    assert check().passed
    assert check(agreement=MIN_AGREEMENT).passed
    assert not check(agreement=0.979).passed
    assert "97.9% of the grades agree" in check(agreement=0.979).problems[0]
    assert check(bf16_accuracy=0.620).passed  # a drop of exactly the tolerance
    assert not check(bf16_accuracy=0.615).passed
    assert not check(bf16_qwk=0.805).passed
    assert check(bf16_accuracy=0.70, bf16_qwk=0.90).passed  # gains are fine
    # on 50 photos one photo's worth (0.02) is the tolerance, and a one-photo flip passes
    assert check(n=50, accuracy_tolerance=0.02, bf16_accuracy=0.61).passed
    assert not check(precision="fp32").passed  # OpenVINO ran in fp32: nothing was checked
    assert not check(bf16_rate=1900.0).passed  # not faster: fp32 stays
    assert [p.split(" ")[0] for p in check(precision="fp32", bf16_rate=10.0, agreement=0.5).problems] == [
        "OpenVINO",
        "only",
        "bf16",
    ]


def test_an_undefined_qwk_counts_as_lost_unless_both_are_undefined():
    assert check(fp32_qwk=math.nan, bf16_qwk=math.nan).passed
    assert not check(bf16_qwk=math.nan).passed
    assert check(fp32_qwk=math.nan).passed


def test_the_check_round_trips_through_the_file_metadata_and_garbage_is_no_check():
    stored = check(fp32_qwk=math.nan, bf16_qwk=math.nan).to_dict()
    assert stored["passed"] is True and stored["fp32_qwk"] is None
    assert Bf16Check.from_dict(stored) == check(fp32_qwk=math.nan, bf16_qwk=math.nan)
    assert Bf16Check.from_dict(check().to_dict()) == check()
    for garbage in (None, "passed", [], {"passed": True}, {**check().to_dict(), "agreement": "all"}):
        assert Bf16Check.from_dict(garbage) is None, garbage


@pytest.mark.parametrize(
    ("native", "stored", "openvino", "choice", "why"),
    [
        (False, check(), True, "onnx", "no bf16 units"),
        (True, None, True, "onnx", "holds no bf16 check"),
        (True, check(agreement=0.9), True, "onnx", "refused: only 90.0%"),
        (True, check(precision="fp32"), True, "onnx", "OpenVINO computed in fp32"),
        (True, check(), False, "onnx", "OpenVINO is not installed"),
        (True, check(), True, "openvino", "passed"),
    ],
)
def test_auto_picks_openvino_only_on_bf16_cpus_for_files_whose_check_passed(native, stored, openvino, choice, why):
    meta = {"bf16_check": stored.to_dict()} if stored is not None else {}
    picked, reason = onnx_runtime_for(meta, native_bf16=native, openvino=openvino)
    assert picked == choice
    assert why in reason


def _args(verb: str, **values) -> argparse.Namespace:
    return argparse.Namespace(verb=verb, **values)


def test_the_command_leaves_tcmalloc_out_only_where_it_may_grade_with_openvino(fake_cpu, monkeypatch):
    predict_onnx = _args("predict", run="m.onnx", runtime="auto")
    predict_run = _args("predict", run="runs/p1", runtime="auto")
    serve_onnx = _args("serve", model="m.ONNX", runtime="auto")
    export = _args("export", run="runs/p1", int8=False)
    export_int8 = _args("export", run="runs/p1", int8=True)
    explicit = _args("predict", run="m.onnx", runtime="openvino")
    fake_cpu(PLAIN)
    assert may_run_openvino(explicit, ("predict",))
    assert not any(
        may_run_openvino(a, k)
        for a, k in ((predict_onnx, ("predict",)), (serve_onnx, ("serve",)), (export, ("export",)))
    )
    fake_cpu(AMX)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "openvino" else None)
    assert may_run_openvino(predict_onnx, ("predict",)) and may_run_openvino(serve_onnx, ("serve",))
    assert may_run_openvino(export, ("export",))
    assert not may_run_openvino(export_int8, ("export",))
    assert not may_run_openvino(predict_run, ("predict",))
    assert not may_run_openvino(_args("predict", run="m.onnx", runtime="onnx"), ("predict",))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # OpenVINO not installed
    assert not may_run_openvino(predict_onnx, ("predict",)) and may_run_openvino(explicit, ("predict",))
