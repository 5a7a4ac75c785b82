"""Checkpoints of format 1 (written before the typed checkpoint) still load, grade and calibrate."""

import numpy as np
import torch

from imgrade.models.axes import CUCUMBER9_GRADES, find_grade_axes
from imgrade.models.factory import build_model
from imgrade.runtime.run import RunFolder
from imgrade.runtime.run_checkpoint import Checkpoint

C9 = list(CUCUMBER9_GRADES)
CALIBRATION = {
    "thresholds": {
        "thresholds": [0.5 + k for k in range(8)],
        "kind": "rounding",
        "objective": "qwk",
        "cv_tuned": None,
        "cv_rounding": None,
        "folds": 5,
        "reason": "kept",
    },
    "conformal": {"kind": "aps", "alpha": 0.1, "qhat": 0.9, "n": 20},
}


def format_1_run(folder):
    """A best.pt laid out as imgrade wrote it before format 2 (an axes run: its table at the top)."""
    table = find_grade_axes(None, None, C9)[0].to_dict()
    torch.manual_seed(0)
    model = build_model(11, "axes", num_grades=9, state={"grade_axes": table})
    config = {
        "data": {"path": "data", "image_size": 32},
        "model": {
            "depth": 11,
            "task": "axes",
            "head": "auto",
            "loss": "mse",
            "sord_beta": 1.0,
            "axes": None,
            "backbone": "reference",
            "pretrained": None,
        },
    }
    payload = {
        "format_version": 1,
        "imgrade_version": "0.1.0",
        "config": config,
        "grade_names": C9,
        "image_size": 32,
        "mean_image": torch.full((3, 32, 32), 0.4),
        "task": "axes",
        "calibration": CALIBRATION,
        "calibration_tta": None,
        "data_source": "synthetic",
        "grade_axes": table,
        "ensemble": None,
        "model_state": model.state_dict(),
        "epoch": 3,
        "val_loss": 1.5,
    }
    folder.mkdir()
    torch.save(payload, folder / "best.pt")
    return model, table


def test_a_format_1_checkpoint_loads_typed_and_grades_as_its_network(tmp_path):
    model, table = format_1_run(tmp_path / "old")
    run = RunFolder.open(tmp_path / "old")
    ckpt = run.checkpoint
    assert (ckpt.task, ckpt.members, ckpt.head_state, ckpt.epoch) == ("axes", 1, {"grade_axes": table}, 3)
    assert ckpt.calibration().to_dict() == CALIBRATION and ckpt.calibration(True) is None
    assert ckpt.config.model.head_settings() == {"axes": None}
    grader = run.grader(device="cpu", tta=False)
    photos = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255 - 0.4
    with torch.no_grad():
        expected = model.eval().decode(model(x)).numpy()
    np.testing.assert_allclose(grader.outputs(photos).scores, expected, rtol=0, atol=1e-5)


def test_saving_writes_format_2_and_reads_back_the_same(tmp_path):
    format_1_run(tmp_path / "old")
    run = RunFolder.open(tmp_path / "old")
    run.save_calibration(run.checkpoint.calibration(), tta=True)
    again = Checkpoint.load(tmp_path / "old" / "best.pt")
    assert torch.load(tmp_path / "old" / "best.pt", weights_only=True)["format_version"] == 2
    assert again.calibration(True) == again.calibration() == run.checkpoint.calibration()
    assert again.head_state == run.checkpoint.head_state and again.config == run.checkpoint.config
