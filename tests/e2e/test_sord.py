"""``imgrade train --task sord``: soft ordinal labels, from the command line to an ONNX grader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgrade.cli import main
from imgrade.data.synthetic import generate_cucumbers
from imgrade.runtime import load_grader
from imgrade.runtime.run_checkpoint import Checkpoint


def test_sord_trains_evaluates_and_exports(synth_dir, tmp_path, capsys):
    run = tmp_path / "sord"
    argv = [
        "train",
        "--data",
        str(synth_dir),
        "--task",
        "sord",
        "--sord-beta",
        "2",
        "--epochs",
        "2",
        "--depth",
        "11",
        "--out",
        str(run),
    ]
    assert main(argv) == 0
    ckpt = Checkpoint.load(run / "best.pt")
    assert ckpt.config.model.task == "sord" and ckpt.config.model.setting("sord_beta") == 2.0
    assert ckpt.to_payload()["config"]["model"]["sord_beta"] == 2.0  # still a flat key in the file
    assert ckpt.calibration().conformal.kind == "aps"  # softmax probabilities give grade sets

    grader = load_grader(run)
    assert grader.model.head.beta == 2.0 and grader.rule in ("most probable grade", "tuned cut points")
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert metrics["task"] == "sord" and metrics["n"] == 18 and 0 <= metrics["grade_sets"]["coverage"] <= 1

    out = tmp_path / "sord.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "outputs score, probabilities, native" in capsys.readouterr().out
    onnx = load_grader(out)
    images = generate_cucumbers(24, seed=3).imageset.images
    expected, got = grader.outputs(images), onnx.outputs(images)
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-4)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-4)
    np.testing.assert_array_equal(got.native, expected.native)
    # the head's own decision is the most probable grade, as for classification
    np.testing.assert_array_equal(expected.native, expected.probabilities.argmax(axis=1))
    assert onnx.task == "sord"


@pytest.mark.parametrize("beta", ["0", "-1"])
def test_a_bad_sord_beta_is_one_line(beta, synth_dir, tmp_path, capsys):
    argv = [
        "train",
        "--data",
        str(synth_dir),
        "--task",
        "sord",
        "--sord-beta",
        beta,
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sord-beta" in err and not (tmp_path / "r").exists()
