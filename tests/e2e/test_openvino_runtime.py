"""`--runtime openvino`: an exported .onnx file graded by a real OpenVINO, and export's bf16 check.

On a CPU without bf16 units (most CI machines) OpenVINO computes in fp32 and must give ONNX Runtime's
grades; on one with them it computes in bf16 and the tests compare grades only where the check would.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from imgrade import Grader
from imgrade.core import cpu as cpu_info
from imgrade.core.allocator import find_tcmalloc
from imgrade.core.errors import ConfigError
from imgrade.pipeline import export
from imgrade.pipeline.exporter import format_export
from imgrade.runtime import load_grader
from imgrade.runtime.bf16_check import Bf16Check
from imgrade.runtime.onnx_engine import METADATA_KEY, OnnxEngine
from imgrade.runtime.onnx_quantize import with_metadata
from imgrade.runtime.openvino_engine import OpenVinoEngine
from imgrade.runtime.run import RunFolder

pytest.importorskip("openvino", reason="OpenVINO is the optional extra imgrade[openvino]")
pytestmark = pytest.mark.openvino  # run apart from the rest of the suite (Makefile)

AMX = "processor\t: 0\nmodel name\t: Xeon with AMX\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"
NATIVE_BF16 = cpu_info.cpu_has_bf16()  # what this machine's OpenVINO will really compute in


@pytest.fixture
def amx_flags(monkeypatch, tmp_path):
    """/proc/cpuinfo reads as a Xeon with AMX (OpenVINO still computes as the real CPU allows)."""
    (tmp_path / "cpuinfo").write_text(AMX)
    monkeypatch.setattr(cpu_info, "CPUINFO", tmp_path / "cpuinfo")


@pytest.fixture(scope="module")
def validation(trained_run) -> tuple[np.ndarray, np.ndarray]:
    imageset, split = RunFolder.open(trained_run).data()
    val = imageset.subset(split["val"])
    return np.asarray(val.images), val.targets.astype(np.int64)


def _metadata(path: Path) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(path).metadata_props}[METADATA_KEY])


def _same_grades(a: np.ndarray, b: np.ndarray, precision: str) -> None:
    if precision == "fp32":
        assert (a == b).all()
    else:
        assert np.mean(a == b) >= 0.8  # a 2-epoch network on a few photos: the 98% rule is the check's


def test_openvino_grades_the_file_as_onnx_runtime_does(trained_onnx, validation):
    images, _ = validation
    reference = load_grader(trained_onnx, runtime="onnx")
    grader = load_grader(trained_onnx, runtime="openvino")
    assert isinstance(grader, OpenVinoEngine) and grader.runtime == "openvino"
    assert grader.precision == ("bf16" if NATIVE_BF16 else "fp32")
    assert grader.describe()["runtime"] == "openvino" and grader.describe()["precision"] == grader.precision
    before, after = reference.outputs(images), grader.outputs(images, batch_size=5)  # several batches
    assert after.scores.dtype == np.float32 and after.grades.dtype == np.int64 and after.sets.dtype == bool
    if grader.precision == "fp32":
        np.testing.assert_allclose(after.scores, before.scores, atol=1e-4)
        assert (after.sets == before.sets).all() and (after.native == before.native).all()
    _same_grades(reference.grades(before), grader.grades(after), grader.precision)
    # the Python API takes the same choice
    api = Grader.load(trained_onnx, runtime="openvino")
    assert api.backend.runtime == "openvino" and "runtime='openvino'" in repr(api)
    assert [g.name for g in api.grade(list(images[:4]))] == [g.name for g in grader.results(["x"] * 4, after[0:4])]


def test_the_command_grades_with_openvino_as_with_onnx_runtime(trained_onnx, synth_dir, tmp_path):
    """A real `imgrade predict` process: it must leave tcmalloc out to run OpenVINO at all."""
    photos = tmp_path / "photos"
    assert subprocess.run([sys.executable, "-m", "imgrade", "data", "synth", "--out", str(photos), "--n", "40",
                           "--format", "folders", "-q"], check=False).returncode == 0  # fmt: skip
    rows = {}
    for runtime in ("onnx", "openvino"):
        out = tmp_path / f"{runtime}.csv"
        done = subprocess.run(
            [sys.executable, "-m", "imgrade", "predict", str(trained_onnx), str(photos), "--runtime", runtime,
             "--out", str(out)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows[runtime] = list(csv.DictReader(out.open()))
    assert len(rows["onnx"]) == len(rows["openvino"]) == 40
    assert [r["image"] for r in rows["onnx"]] == [r["image"] for r in rows["openvino"]]
    grades = {k: np.array([r["grade"] for r in v]) for k, v in rows.items()}
    _same_grades(grades["onnx"], grades["openvino"], "bf16" if NATIVE_BF16 else "fp32")


def test_export_checks_bf16_on_a_bf16_cpu_and_auto_follows_the_check(
    trained_run, validation, tmp_path, amx_flags, monkeypatch
):
    monkeypatch.setattr("imgrade.pipeline.exporter.cpu_has_bf16", cpu_info.cpu_has_bf16)  # the faked flags
    out = tmp_path / "m.onnx"
    summary = export(trained_run, out=out)
    check = summary["bf16_check"]
    assert isinstance(check, Bf16Check) and "bf16 check on" in format_export(summary)
    meta = _metadata(out)
    assert Bf16Check.from_dict(meta["bf16_check"]) == check
    assert check.cpu == "Xeon with AMX" and check.n == len(validation[1])
    # the numbers are those of the validation split graded both ways
    images, y = validation
    fp32 = OnnxEngine.from_file(out)
    assert check.fp32_accuracy == pytest.approx(np.mean(fp32.grades(fp32.outputs(images)) == y))
    assert check.precision == ("bf16" if NATIVE_BF16 else "fp32")
    assert "## Grading in bf16" in meta["model_card"] and check.summary() in meta["model_card"]
    assert check.fp32_rate > 0 and check.bf16_rate > 0
    if not NATIVE_BF16:  # OpenVINO computed in fp32 here: checked nothing, so auto keeps ONNX Runtime
        assert not check.passed and check.agreement == 1.0
        assert type(load_grader(out)) is OnnxEngine
    # a file whose check passed is graded by OpenVINO where the CPU has bf16 units
    passed = tmp_path / "passed.onnx"
    stored = {**check.to_dict(), "precision": "bf16", "agreement": 1.0, "bf16_rate": check.fp32_rate * 3}
    stored.update(bf16_accuracy=check.fp32_accuracy, bf16_qwk=check.fp32_qwk)
    passed.write_bytes(with_metadata(out.read_bytes(), {"bf16_check": stored}))
    assert Bf16Check.from_dict(_metadata(passed)["bf16_check"]).passed
    assert type(load_grader(passed)) is OpenVinoEngine
    assert type(load_grader(passed, runtime="onnx")) is OnnxEngine


def test_export_on_a_cpu_without_bf16_units_stores_no_check(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr("imgrade.pipeline.exporter.cpu_has_bf16", lambda: False)
    out = tmp_path / "m.onnx"
    assert export(trained_run, out=out).get("bf16_check") is None
    assert "bf16_check" not in _metadata(out)
    assert type(load_grader(out)) is OnnxEngine


def test_without_openvino_the_runtime_says_what_to_install(trained_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ConfigError, match=r"pip install 'imgrade\[openvino\]'"):
        load_grader(trained_onnx, runtime="openvino")
    with pytest.raises(ConfigError, match="needs an .onnx file"):
        load_grader(trained_onnx.parent, runtime="openvino")


def test_beside_a_preloaded_tcmalloc_openvino_is_refused_in_one_line(trained_onnx):
    library = find_tcmalloc()
    if library is None:
        pytest.skip("tcmalloc is not installed (apt-get install libtcmalloc-minimal4)")
    code = f"from imgrade import Grader; Grader.load({str(trained_onnx)!r}, runtime='openvino')"
    env = {**os.environ, "LD_PRELOAD": library}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1
    assert "ConfigError: OpenVINO aborts in a process with tcmalloc preloaded" in done.stderr
    assert "invalid pointer" not in done.stderr


def test_serve_grades_with_openvino_and_says_so(trained_onnx, validation, tmp_path, imgrade_serve):
    import httpx
    from PIL import Image

    images, _ = validation
    photo = tmp_path / "c.png"
    Image.fromarray(images[0]).save(photo)
    log = tmp_path / "server.log"
    with imgrade_serve(trained_onnx, log, "--runtime", "openvino") as url:
        model = httpx.get(f"{url}/v1/model", timeout=30).json()
        answer = httpx.post(f"{url}/v1/grade", files={"files": ("c.png", photo.read_bytes())}, timeout=60)
    assert model["runtime"] == "openvino" and model["precision"] == ("bf16" if NATIVE_BF16 else "fp32")
    assert answer.status_code == 200, answer.text
    (record,) = answer.json()["results"]
    expected = Grader.load(trained_onnx, runtime="openvino").grade(photo)
    assert record["grade"] == expected.name and record["score"] == pytest.approx(expected.score, abs=1e-5)
    assert "openvino" in log.read_text()


def test_the_acceptance_test_grades_with_the_runtime_the_line_will_use(trained_onnx, synth_dir, tmp_path, capsys):
    from imgrade.cli import main

    metrics = {}
    for runtime in ("onnx", "openvino"):
        out = tmp_path / runtime
        flags = ["--data", str(synth_dir), "--out", str(out), "--gallery", "0", "--runtime", runtime]
        assert main(["evaluate", str(trained_onnx), *flags]) == 0
        facts = json.loads((out / "metrics.json").read_text())
        assert facts["model"]["runtime"] == runtime
        metrics[runtime] = facts
        name = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}[runtime]
        assert f"{facts['model']['precision']}, graded by {name}." in (out / "model_card.md").read_text()
    if not NATIVE_BF16:
        assert metrics["openvino"]["accuracy"] == metrics["onnx"]["accuracy"]
    assert main(["evaluate", str(trained_onnx.parent), "--runtime", "openvino"]) == 2
    assert "grades an .onnx file" in capsys.readouterr().err
