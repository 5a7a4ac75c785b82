"""--compile through the CLI: auto's probe changes no weight, the choice is recorded and kept on
--resume, an ensemble decides once, and `--compile on` that cannot compile says how to fix it.

torch.compile's code generation takes minutes on a CPU, so the runs here trace the network with
dynamo and run it without generating code (``backend="eager"``): the same path through the
trainer, the probe and the loop, in seconds.
"""

import importlib
import logging
import random

import numpy as np
import pytest
import torch
import yaml

from imgrade.cli import main
from imgrade.runtime.run_checkpoint import Checkpoint
from imgrade.training import compile_probe

TRAINING = importlib.import_module("imgrade.pipeline.trainer")


def _traced_compile(model):
    """torch.compile's tracing without code generation, drawing from every random stream as a compile might."""
    torch.rand(3), np.random.rand(3), random.random()
    model.compile(backend="eager")


@pytest.fixture
def traced(monkeypatch):
    """Runs compile with ``_traced_compile``; ``traced.pays`` sets what auto's probe concludes."""

    class Traced:
        pays = False
        probes = 0

    def pays(*args, **kwargs):
        Traced.probes += 1
        return Traced.pays

    monkeypatch.setattr(compile_probe, "compile_model", _traced_compile)
    monkeypatch.setattr(TRAINING, "compile_model", _traced_compile)
    monkeypatch.setattr(compile_probe, "PROBE_MIN_EAGER_S", 0.0)  # the probe compiles, however short the run
    monkeypatch.setattr(compile_probe, "PROBE_ROUNDS", 1)
    monkeypatch.setattr(compile_probe, "compile_pays", pays)
    yield Traced
    torch._dynamo.reset()


def _args(synth_dir, out, *more):
    return [
        "train",
        "--data",
        str(synth_dir),
        "--epochs",
        "2",
        "--depth",
        "11",
        "--threads",
        "1",
        "--out",
        str(out),
        *more,
    ]


def _weights(run):
    return Checkpoint.load(run / "last.pt").model_state


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _recorded(run):
    return yaml.safe_load((run / "config.yaml").read_text())["train"]["compile"]


def test_auto_that_says_off_trains_the_weights_of_compile_off_bit_for_bit(synth_dir, tmp_path, monkeypatch, caplog):
    # the default on a short run: auto decides off from two eager steps, compiling nothing
    with caplog.at_level(logging.INFO, logger="imgrade"):
        assert main(_args(synth_dir, tmp_path / "auto")) == 0
    assert "too short to repay a compile" in caplog.text and _recorded(tmp_path / "auto") == "off"
    assert main(_args(synth_dir, tmp_path / "off", "--compile", "off")) == 0
    assert _same(_weights(tmp_path / "auto"), _weights(tmp_path / "off"))


def test_a_probe_that_compiled_and_said_off_leaves_the_weights_of_compile_off(synth_dir, tmp_path, traced, caplog):
    assert main(_args(synth_dir, tmp_path / "off", "--compile", "off")) == 0
    with caplog.at_level(logging.INFO, logger="imgrade"):
        assert main(_args(synth_dir, tmp_path / "probed")) == 0
    assert traced.probes == 1 and "compile auto -> off: eager " in caplog.text and "warm-up over" in caplog.text
    assert _recorded(tmp_path / "probed") == "off"
    assert _same(_weights(tmp_path / "off"), _weights(tmp_path / "probed"))


def test_resume_keeps_the_recorded_choice_and_the_uninterrupted_weights(
    synth_dir, tmp_path, traced, interrupted_training
):
    traced.pays = True
    assert main(_args(synth_dir, tmp_path / "whole")) == 0
    assert _recorded(tmp_path / "whole") == "on" and traced.probes == 1

    with interrupted_training():
        assert main(_args(synth_dir, tmp_path / "broken")) == 130
    assert _recorded(tmp_path / "broken") == "on" and traced.probes == 2
    traced.pays = False  # a probe now would say off: none runs
    assert main(["train", "--resume", "--out", str(tmp_path / "broken")]) == 0
    assert traced.probes == 2 and _recorded(tmp_path / "broken") == "on"
    assert Checkpoint.load(tmp_path / "broken" / "last.pt").config.train.compile == "on"
    assert _same(_weights(tmp_path / "whole"), _weights(tmp_path / "broken"))


def test_an_ensemble_probes_once_and_every_member_records_that_choice(synth_dir, tmp_path, traced):
    traced.pays = True
    args = ["train", "--data", str(synth_dir), "--epochs", "1", "--depth", "11", "--threads", "1", "--ensemble", "2"]
    assert main([*args, "--out", str(tmp_path / "ens")]) == 0
    assert traced.probes == 1
    run = tmp_path / "ens"
    assert [_recorded(run), _recorded(run / "members" / "m0"), _recorded(run / "members" / "m1")] == ["on"] * 3
    assert Checkpoint.load(run / "best.pt").config.train.compile == "on"


def test_compile_on_that_cannot_compile_fails_in_one_line_before_the_run_starts(
    synth_dir, tmp_path, monkeypatch, capsys
):
    def no_compiler(model):
        def fail(*args, **kwargs):
            raise RuntimeError(
                "InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx\n..."
            )

        model.forward = fail

    monkeypatch.setattr(compile_probe, "compile_model", no_compiler)
    assert main(_args(synth_dir, tmp_path / "run", "--compile")) == 2  # the flag alone means on
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "imgrade: error: --compile on: torch.compile failed here (RuntimeError: InvalidCxxCompiler:"
    )
    assert "--compile off" in err[-1] and not (tmp_path / "run" / "config.yaml").exists()
