"""train --ema: the averaged weights are validated and kept as best.pt; off, nothing changes."""

import importlib

import pytest
import torch

from imgrade.cli import main
from imgrade.runtime.run_checkpoint import Checkpoint

TRAINING = importlib.import_module("imgrade.pipeline.trainer")  # the module; `pipeline.train` is the function

EPOCHS = ["--epochs", "3", "--depth", "11"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(path) -> list[dict]:
    return Checkpoint.load(path).training.history


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_dir):
    """Three 3-epoch runs of the same seed: no flag, --ema 0 and --ema 0.9."""
    root = tmp_path_factory.mktemp("ema")
    for name, flags in (("plain", []), ("zero", ["--ema", "0"]), ("ema", ["--ema", "0.9"])):
        assert main(["train", "--data", str(synth_dir), *EPOCHS, *flags, "--out", str(root / name)]) == 0
    return root


def test_ema_off_gives_the_same_run(runs):
    for name in ("best.pt", "last.pt"):
        plain, zero = Checkpoint.load(runs / "plain" / name), Checkpoint.load(runs / "zero" / name)
        assert _same(plain.model_state, zero.model_state), name
        assert zero.training is None or zero.training.ema_state is None  # best.pt holds no training state
    timeless = [
        [{k: v for k, v in row.items() if k != "seconds"} for row in _history(runs / n / "last.pt")]
        for n in ("plain", "zero")
    ]
    assert timeless[0] == timeless[1]


def test_best_pt_holds_the_average_and_training_itself_is_untouched(runs):
    plain, last, best = (Checkpoint.load(runs / n) for n in ("plain/last.pt", "ema/last.pt", "ema/best.pt"))
    # the average rides along: the live weights and training losses are those of the plain run
    assert _same(last.model_state, plain.model_state)
    history, plain_history = last.training.history, plain.training.history
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in plain_history]
    # ... while what is validated is the average
    assert all(a["val_loss"] != b["val_loss"] for a, b in zip(history, plain_history))
    assert last.training.ema_steps == 3 * 2  # 54 training images in batches of 32: 2 steps per epoch
    assert best.epoch == 3, "the comparison below needs the last epoch to be the best one"
    assert _same(best.model_state, last.training.ema_state)
    assert not _same(best.model_state, last.model_state)
    assert best.val_loss == history[-1]["val_loss"]


def test_resume_with_ema_continues_to_the_same_weights(runs, synth_dir, tmp_path, monkeypatch):
    cut = tmp_path / "cut"
    real_write = TRAINING.write_history

    def interrupt_after_two_epochs(path, history):
        real_write(path, history)
        if len(history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(TRAINING, "write_history", interrupt_after_two_epochs)
    assert main(["train", "--data", str(synth_dir), *EPOCHS, "--ema", "0.9", "--out", str(cut)]) == 130
    monkeypatch.setattr(TRAINING, "write_history", real_write)
    assert Checkpoint.load(cut / "last.pt").training.ema_steps == 2 * 2
    assert main(["train", "--resume", "--out", str(cut)]) == 0
    full, resumed = Checkpoint.load(runs / "ema" / "last.pt"), Checkpoint.load(cut / "last.pt")
    assert [r["val_loss"] for r in full.training.history] == [r["val_loss"] for r in resumed.training.history]
    assert _same(full.model_state, resumed.model_state)
    assert _same(full.training.ema_state, resumed.training.ema_state)
    assert full.training.ema_steps == resumed.training.ema_steps
    assert _same(Checkpoint.load(runs / "ema" / "best.pt").model_state, Checkpoint.load(cut / "best.pt").model_state)


def test_ema_out_of_range_is_one_line_and_writes_nothing(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(synth_dir), "--ema", "1.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "train.ema 1.5 must be in (0, 1), e.g. 0.999, or 0 for none: set --ema" in err
    assert not out.exists()
