"""`--ensemble K` and `--tta`: one run of K members, averaged; test-time views; both through ONNX."""

import importlib
import json

import numpy as np
import pytest
import torch

from imgrade import pipeline
from imgrade.cli import main
from imgrade.config import load_config
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.models.ensemble import TTAModel, tta_offsets
from imgrade.models.factory import build_model
from imgrade.runtime.onnx_engine import OnnxEngine
from imgrade.runtime.run_checkpoint import Checkpoint
from imgrade.runtime.torch_engine import TorchEngine

TRAINING = importlib.import_module("imgrade.pipeline.trainer")  # the module; `pipeline.train` is the function

TRAIN = ["--epochs", "2", "--depth", "11", "--seed", "1"]


@pytest.fixture(scope="module", params=["classification", "regression"])
def ensemble_run(request, tmp_path_factory, synth_dir):
    run = tmp_path_factory.mktemp("runs") / f"ens-{request.param}"
    assert (
        main(["train", "--data", str(synth_dir), "--task", request.param, "--ensemble", "2", *TRAIN, "--out", str(run)])
        == 0
    )
    return run


@pytest.fixture(scope="module")
def images(synth_dir):
    return read_cucumber9(synth_dir).images[:40]


def test_ensemble_holds_its_members_and_averages_them(ensemble_run, images):
    for i, seed in enumerate((2, 3)):  # seed 1 of an ensemble of 2: members 2 and 3
        member = Checkpoint.load(ensemble_run / "members" / f"m{i}" / "best.pt")
        assert member.config.train.seed == seed
    best = Checkpoint.load(ensemble_run / "best.pt")
    assert best.members == 2 and best.calibration() is not None and best.calibration(tta=True) is not None
    ensemble = TorchEngine.from_run(ensemble_run, device="cpu")
    members = [TorchEngine.from_run(ensemble_run / "members" / f"m{i}", device="cpu") for i in range(2)]
    got = ensemble.outputs(images)
    parts = [m.outputs(images) for m in members]
    # the expected grade is linear in the probabilities, so the ensemble's score is the members' mean
    np.testing.assert_allclose(got.scores, np.mean([p.scores for p in parts], axis=0), atol=1e-5)
    if got.probabilities is not None:
        np.testing.assert_allclose(got.probabilities, np.mean([p.probabilities for p in parts], axis=0), atol=1e-5)
    assert not np.allclose(parts[0].scores, parts[1].scores)  # two seeds, two different networks


def test_evaluate_shows_each_member_beside_the_ensemble(ensemble_run, capsys):
    assert main(["evaluate", str(ensemble_run)]) == 0
    printed = capsys.readouterr().out
    assert "ensemble" in printed and "m0 (seed 2)" in printed and "m1 (seed 3)" in printed
    metrics = json.loads((ensemble_run / "eval-test" / "metrics.json").read_text())
    assert [m["member"] for m in metrics["members"]] == ["m0", "m1"]
    assert "m1 (seed 3)" in (ensemble_run / "eval-test" / "report.html").read_text()


def test_ensemble_exports_to_one_onnx_file_with_and_without_tta(ensemble_run, images, tmp_path):
    for tta in (False, True):
        out = tmp_path / f"model{'-tta' if tta else ''}.onnx"
        assert main(["export", str(ensemble_run), "--out", str(out), *(["--tta"] if tta else [])]) == 0
        onnx_grader = OnnxEngine.from_file(out)
        assert onnx_grader.members == 2 and onnx_grader.tta is tta
        assert "| ensemble | 2 members (seeds 2, 3), graded by their average |" in onnx_grader.model_card
        torch_grader = TorchEngine.from_run(ensemble_run, device="cpu", tta=tta)
        expected, got = torch_grader.outputs(images), onnx_grader.outputs(images)
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-4)
        assert np.array_equal(got.native, expected.native)
        assert onnx_grader.calibration == torch_grader.calibration
    best = Checkpoint.load(ensemble_run / "best.pt")
    plain, augmented = best.calibration(), best.calibration(tta=True)
    assert OnnxEngine.from_file(tmp_path / "model-tta.onnx").calibration == augmented
    assert OnnxEngine.from_file(tmp_path / "model.onnx").calibration == plain


def test_tta_on_a_file_exported_without_it_is_refused(ensemble_run, synth_dir, tmp_path, capsys):
    out = tmp_path / "plain.onnx"
    assert main(["export", str(ensemble_run), "--out", str(out)]) == 0
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(read_cucumber9(synth_dir).images[0]).save(photo)
    capsys.readouterr()
    assert main(["predict", str(out), str(photo), "--tta"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exported without test-time augmentation" in err[0] and "--tta" in err[0]
    assert main(["predict", str(ensemble_run), str(photo), "--tta"]) == 0  # a run does it itself


def test_tta_averages_the_mirror_and_four_shifts(images):
    torch.manual_seed(0)
    model = build_model(depth=11, task="coral", num_grades=9).eval()
    mean = torch.rand(3, 32, 32)
    raw = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255  # (4, 3, 32, 32)
    with torch.no_grad():
        got = model.probabilities(TTAModel(model, mean)(raw - mean))
        views = []
        for dy, dx, flipped in tta_offsets(32):  # each view made by hand, nearest-edge fill
            rows = np.clip(np.arange(32) - dy, 0, 31)
            cols = np.clip(np.arange(32) - dx, 0, 31)
            view = raw[:, :, rows][:, :, :, cols]
            views.append(model.probabilities(model((view.flip(3) if flipped else view) - mean)))
    assert len(views) == 6
    torch.testing.assert_close(got, torch.stack(views).mean(0), atol=1e-5, rtol=0)


def test_evaluate_with_tta_uses_its_own_calibration(ensemble_run):
    metrics = pipeline.evaluate(ensemble_run, tta=True)
    assert (ensemble_run / "eval-test-tta" / "metrics.json").is_file()
    assert metrics["n"] > 0


def test_an_interrupted_ensemble_resumes_member_by_member(synth_dir, tmp_path, monkeypatch):
    args = ["--data", str(synth_dir), "--task", "classification", "--ensemble", "2", "--epochs", "2", "--depth", "11"]
    assert main(["train", *args, "--out", str(tmp_path / "full")]) == 0
    real_write = TRAINING.write_history

    def stop_in_the_second_member(path, history):
        real_write(path, history)
        if path.parent.name == "m1" and len(history) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(TRAINING, "write_history", stop_in_the_second_member)
    assert main(["train", *args, "--out", str(tmp_path / "cut")]) == 130
    monkeypatch.setattr(TRAINING, "write_history", real_write)
    assert not (tmp_path / "cut" / "best.pt").exists()
    assert main(["train", *args, "--out", str(tmp_path / "cut")]) == 2  # unfinished: resume, or overwrite
    assert main(["train", "--resume", "--out", str(tmp_path / "cut")]) == 0
    full, cut = (Checkpoint.load(tmp_path / run / "best.pt") for run in ("full", "cut"))
    assert full.model_state.keys() == cut.model_state.keys()
    for key, value in full.model_state.items():
        assert torch.equal(value, cut.model_state[key]), key
    assert full.calibration() == cut.calibration()
    assert main(["train", "--resume", "--out", str(tmp_path / "cut")]) == 2  # finished: nothing to resume


def test_ensemble_zero_is_refused_and_writes_nothing(synth_dir, tmp_path, capsys):
    assert main(["train", "--data", str(synth_dir), "--ensemble", "0", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ensemble" in err[0]
    assert not (tmp_path / "run").exists()


def test_preset_accurate_trains_a_sord_ensemble(synth_dir, tmp_path):
    run = tmp_path / "accurate"
    assert (
        main(
            [
                "train",
                "--data",
                str(synth_dir),
                "--preset",
                "accurate",
                "--epochs",
                "1",
                "--depth",
                "11",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    cfg = Checkpoint.load(run / "best.pt").config
    assert (cfg.model.task, cfg.train.ensemble, cfg.calibrate.tta) == ("sord", 3, False)
    assert sorted(p.name for p in (run / "members").iterdir()) == ["m0", "m1", "m2"]
    assert not TorchEngine.from_run(run, device="cpu").tta  # the run's default
    assert main(["evaluate", str(run)]) == 0
    assert (run / "eval-test" / "metrics.json").is_file()


def test_a_run_configured_to_grade_with_tta_does_so_by_default(synth_dir, tmp_path):
    run = tmp_path / "tta"
    cfg = load_config(None).with_overrides(
        {"data.path": str(synth_dir), "model.task": "corn", "model.depth": 11, "train.epochs": 1, "calibrate.tta": True}
    )
    pipeline.train(cfg, run)
    assert TorchEngine.from_run(run, device="cpu").tta and not TorchEngine.from_run(run, device="cpu", tta=False).tta
    assert main(["evaluate", str(run)]) == 0
    assert (run / "eval-test-tta" / "metrics.json").is_file()
    assert main(["export", str(run), "--out", str(tmp_path / "a.onnx")]) == 0
    assert OnnxEngine.from_file(tmp_path / "a.onnx").tta


def test_flags_and_config_files_override_a_preset(synth_dir, tmp_path):
    from imgrade.config import load_config

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  ensemble: 2\n")
    cfg = load_config(yaml_file, preset="accurate").with_overrides({"model.task": "corn"})
    assert (cfg.model.task, cfg.train.ensemble) == ("corn", 2)
    assert load_config(None, preset="reference") == load_config(None)


def test_the_service_grades_with_an_ensemble_under_tta_unchanged(ensemble_run, images):
    import io
    import warnings

    from PIL import Image

    from imgrade.runtime import load_grader
    from imgrade.serve import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient

    grader = load_grader(ensemble_run, device="cpu", tta=True)
    expected = grader.outputs(images[:2])
    served = grader.for_serving()  # every member and its six views in one graph, for ONNX Runtime
    assert isinstance(served, OnnxEngine) and served.tta and served.members == grader.members == 2
    augmented = grader.checkpoint.calibration(tta=True)
    assert served.calibration.to_dict() == json.loads(json.dumps(augmented.to_dict()))
    assert served.calibration == augmented
    np.testing.assert_allclose(served.outputs(images[:2]).scores, expected.scores, atol=1e-4)
    files = []
    for i in range(2):
        buffer = io.BytesIO()
        Image.fromarray(images[i]).save(buffer, format="PNG")
        files.append(("files", (f"{i}.png", buffer.getvalue(), "image/png")))
    with TestClient(create_app(served, source_name="ensemble")) as client:
        answer = client.post("/v1/grade", files=files)
    assert answer.status_code == 200
    scores = [r["score"] for r in answer.json()["results"]]
    np.testing.assert_allclose(scores, expected.scores, atol=1e-4)
