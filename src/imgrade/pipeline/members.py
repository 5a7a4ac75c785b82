"""An ensemble's members: their seeds, how far each got, and the one checkpoint that holds them all.

``imgrade train --ensemble K`` trains K members on one split, each a complete run folder in
RUN/members/mI (see pipeline/trainer.py), then grades with their average.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from imgrade.config import RunConfig, load_config
from imgrade.core.checkpoint import LAST
from imgrade.core.errors import CheckpointError
from imgrade.core.rundir import member_dir
from imgrade.pipeline.runs import calibration_missing, ensemble_finished, finished_training
from imgrade.runtime.run_checkpoint import Checkpoint
from imgrade.training import tracking


def member_seed(seed: int, members: int, index: int) -> int:
    """The seed of ensemble member ``index``: ensembles with seeds 0, 1, 2 share no member, and
    member 0 of the seed-0 ensemble is the plain seed-0 run.

    >>> [member_seed(1, 3, i) for i in range(3)]
    [3, 4, 5]
    """
    return seed * members + index


def member_state(member: Path) -> str:
    """'done' (trained and calibrated), 'resume' (begun) or 'fresh'."""
    if not (member / "config.yaml").is_file():
        return "fresh"
    try:
        last = Checkpoint.load(member / LAST) if (member / LAST).is_file() else None
    except CheckpointError:
        return "resume"
    if last is not None and finished_training(last) and not (last.grade_names and calibration_missing(member)):
        return "done"
    return "resume"


def run_state(run: Path) -> str:
    """'done', 'resume' or 'fresh' for a run folder of one network or of an ensemble."""
    if not (run / "config.yaml").is_file():
        return "fresh"
    if load_config(run / "config.yaml").train.ensemble > 1:
        return "done" if (run / "best.pt").is_file() and ensemble_finished(run) else "resume"
    return member_state(run)


def mean_history(histories: list[list[dict]]) -> list[dict]:
    """Per epoch, the mean of the members' losses (what the ensemble's loss curve shows)."""
    rows = []
    for epoch_rows in zip(*histories):
        row = dict(epoch_rows[0])
        for key in ("train_loss", "val_loss", "val_mae", "seconds"):
            row[key] = float(np.mean([float(r[key]) for r in epoch_rows]))
        rows.append(row)
    return rows


def assemble_ensemble(cfg: RunConfig, out: Path, k: int) -> None:
    """One checkpoint with every member's best weights (``members.I.*``), graded as one network."""
    states = [Checkpoint.load(member_dir(out, i) / "best.pt") for i in range(k)]
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if not torch.equal(state.mean_image, first.mean_image):
            raise CheckpointError(
                f"{member_dir(out, i)} was trained on another split than member 0: train the ensemble again with --overwrite"
            )
    ensemble = first.replace(
        config=cfg,
        members=k,
        member_epochs=[int(state.epoch) for state in states],
        epoch=None,
        val_loss=float(np.mean([float(state.val_loss) for state in states])),
        model_state={
            f"members.{i}.{key}": value for i, state in enumerate(states) for key, value in state.model_state.items()
        },
        calibrations={},
        training=None,
    )
    ensemble.save(out / "best.pt")


def member_tracking(cfg: RunConfig, out: Path) -> dict:
    """An ensemble member logs where the ensemble does: its MLflow store, and its TensorBoard folder
    under the ensemble's (a shared --log-dir would otherwise mix the members of several ensembles)."""
    if not cfg.train.log_to:
        return {}
    overrides = {"train.log_dir": str(tracking.tensorboard_dir(cfg, out))}
    if "mlflow" in cfg.train.log_to:
        uri = cfg.train.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or tracking.default_tracking_uri(out)
        overrides["train.tracking_uri"] = uri
    return overrides
