"""The run folder a training writes: checked fresh, read back on --resume, or cleared on --overwrite.

A run folder holds config.yaml, split.json and data.json (written when training starts), last.pt
and best.pt (after each epoch), history.csv and loss_curve.png; an ensemble adds members/mI, each
a run folder of its own. Everything here runs on rank 0 under the folder's lock.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from imgrade.config import RunConfig, load_config, parse_split
from imgrade.core.checkpoint import LAST, find_run_checkpoint
from imgrade.core.errors import CheckpointError, ConfigError
from imgrade.core.io import remove_stale_temporaries
from imgrade.core.names import MODEL_CARD
from imgrade.core.registry import head_entry, pretrained_is_file
from imgrade.core.rundir import MEMBERS, load_split
from imgrade.data.imageset import ImageSet
from imgrade.data.splits import hold_out_calibration, make_split
from imgrade.data.unlabeled import list_pool
from imgrade.models.backbones import check_backbone
from imgrade.runtime.run_checkpoint import Checkpoint

logger = logging.getLogger(__name__)


def prepare_out(cfg: RunConfig, out: Path, resume: bool, overwrite: bool) -> tuple[RunConfig, Checkpoint | None]:
    """Check ``out`` for a fresh run, or read the run to resume; returns the config and last.pt's state.

    Runs under the run folder's lock, so the temporary files of a writer that was killed are stale
    and go first.
    """
    stale = remove_stale_temporaries(out)
    if stale:
        logger.info(f"removed {len(stale)} unfinished temporary file(s) left by an interrupted run in {out}")
    resume_state = None
    if resume:
        cfg, resume_state = _resume_state(out)
    else:
        _check_out_is_free(out, overwrite)
    if cfg.data.path is None:
        raise ConfigError("no data given: pass --data PATH (or set data.path in --config)")
    if resume_state is None and Path(cfg.data.path).exists():
        # evaluate reads the data again later, perhaps from another working directory
        cfg = cfg.with_overrides({"data.path": str(Path(cfg.data.path).resolve())})
    if resume_state is None:
        cfg = _resolve_setting_paths(cfg)
    if resume_state is None:
        check_backbone(
            cfg.model.backbone, cfg.model.pretrained
        )  # the name, timm, the weights file: before the data is read
    if resume_state is None and pretrained_is_file(cfg.model.backbone, cfg.model.pretrained):
        cfg = cfg.with_overrides({"model.pretrained": str(Path(cfg.model.pretrained).resolve())})
    if resume_state is None and cfg.train.init:
        find_run_checkpoint(cfg.train.init)  # a wrong path fails now, before the data is read
        cfg = cfg.with_overrides({"train.init": str(Path(cfg.train.init).resolve())})
    if resume_state is None:
        cfg = _resolve_teaching_paths(cfg)
    return cfg, resume_state


def _resolve_teaching_paths(cfg: RunConfig) -> RunConfig:
    """--unlabeled and --teacher checked to exist (before the data is read) and made absolute, as
    the run records them; --distill-weight without a teacher is a no-op worth saying."""
    changes = {}
    if cfg.data.unlabeled:
        if not Path(cfg.data.unlabeled).exists():
            raise ConfigError(
                f"--unlabeled {cfg.data.unlabeled} does not exist: pass a folder of photos, a CSV with a path column, "
                "or a text file listing one photo per line"
            )
        list_pool(cfg.data.unlabeled)  # every listed photo exists and is a regular file: checked before training
        changes["data.unlabeled"] = str(Path(cfg.data.unlabeled).resolve())
    if cfg.train.teacher:
        teacher = Path(cfg.train.teacher)
        if teacher.suffix.lower() != ".onnx":
            find_run_checkpoint(teacher)  # a run folder or .pt imgrade wrote; names the fix otherwise
        elif not teacher.is_file():
            raise ConfigError(
                f"--teacher {teacher} does not exist: pass a run folder, a .pt checkpoint or an .onnx file"
            )
        changes["train.teacher"] = str(teacher.resolve())
    return cfg.with_overrides(changes) if changes else cfg


def started_training(out: Path) -> Checkpoint | None:
    """The last.pt in ``out`` to go on from, or None where training has not finished an epoch."""
    return Checkpoint.load(out / LAST) if (out / LAST).is_file() else None


def recorded_compile(run: Path) -> str:
    """The ``--compile`` choice, on or off, that the run in ``run`` recorded in its config.yaml."""
    return load_config(run / "config.yaml").train.compile


def choose_split(
    cfg: RunConfig, out: Path, imageset: ImageSet, resuming: bool, split: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The run's split: the saved one when resuming, else ``split`` or a new seeded one."""
    if resuming:
        return load_split(out, imageset)
    if split is None:
        split = make_split(imageset, parse_split(cfg.data.split), cfg.train.seed)
    if imageset.is_ordinal and "cal" not in split:  # an ensemble's members get the split with its hold-out
        split = hold_out_calibration(split, imageset, cfg.calibrate.holdout, cfg.train.seed)
    return split


def _check_out_is_free(out: Path, overwrite: bool) -> None:
    if not (out / "config.yaml").exists() and not (out / LAST).exists():
        return
    if overwrite:
        for name in (
            "config.yaml",
            "split.json",
            "data.json",
            "best.pt",
            LAST,
            "history.csv",
            "loss_curve.png",
            "mlflow.json",
            MODEL_CARD,
            "teacher.npz",
        ):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / MEMBERS, ignore_errors=True)
        if (out / "teacher" / "config.yaml").is_file():  # the teacher a self-taught run trained (OUT/teacher)
            shutil.rmtree(out / "teacher", ignore_errors=True)
        return
    finished = False
    if (out / LAST).exists():
        try:
            finished = finished_training(Checkpoint.load(out / LAST))
        except CheckpointError:
            pass
    elif (out / MEMBERS).is_dir() and (out / "best.pt").exists():
        finished = ensemble_finished(out)
    what = "a finished run" if finished else "an unfinished run"
    fix = (
        "choose another --out or pass --overwrite"
        if finished
        else "continue it with --resume, or pass --overwrite to start again"
    )
    raise ConfigError(f"{out} already holds {what}: {fix}")


def _resolve_setting_paths(cfg: RunConfig) -> RunConfig:
    """The task's settings that name a file (``--axes``) checked and resolved: a wrong path fails
    now, before the data is read, and the run records where the file is."""
    settings = head_entry(cfg.model.task).settings_class()
    declared = {f.name: f for f in fields(settings)} if settings is not None else {}
    files = {
        name: value
        for name, value in cfg.model.head_settings().items()
        if value and declared[name].metadata.get("path")
    }
    for name, value in files.items():
        if not Path(value).is_file():
            what = declared[name].metadata["path"]
            raise ConfigError(f"{what} {value} does not exist: check the --{name.replace('_', '-')} path")
    return cfg.with_overrides({f"model.{name}": str(Path(v).resolve()) for name, v in files.items()}) if files else cfg


def ensemble_finished(out: Path) -> bool:
    try:
        best = Checkpoint.load(out / "best.pt")
    except CheckpointError:
        return False
    return best.members > 1 and (best.calibration() is not None or not best.grade_names)


def _resume_state(out: Path) -> tuple[RunConfig, Checkpoint | None]:
    if not (out / "config.yaml").is_file():
        raise CheckpointError(
            f"cannot resume: {out} holds no run (no config.yaml): start it with `imgrade train --out {out}`"
        )
    cfg = load_config(out / "config.yaml")
    if cfg.train.ensemble > 1:  # resumed member by member (see _train_ensemble)
        if (out / "best.pt").exists() and ensemble_finished(out):
            raise ConfigError(
                f"{out} is already finished (an ensemble of {cfg.train.ensemble}): nothing to resume; evaluate it, or train into another --out"
            )
        logger.info(f"resuming the ensemble in {out}")
        return cfg, None
    if not (out / LAST).is_file():
        logger.info(f"{out} has no finished epoch yet: starting it from the beginning")
        return cfg, None
    state = Checkpoint.load(out / LAST)
    finished = finished_training(state)
    if finished and state.grade_names and calibration_missing(out):
        logger.info(f"{out} finished training but was stopped before calibration: calibrating it now")
        return cfg, state
    if finished:
        raise ConfigError(
            f"{out} is already finished ({state.epoch} epochs): nothing to resume; evaluate it, or train into another --out"
        )
    logger.info(f"resuming {out} after epoch {state.epoch}/{cfg.train.epochs}")
    return cfg, state


def finished_training(last: Checkpoint) -> bool:
    """Whether ``last`` (a last.pt) was written after the final epoch."""
    return last.training is not None and bool(last.training.finished)


def calibration_missing(out: Path) -> bool:
    try:
        return Checkpoint.load(out / "best.pt").calibration() is None
    except CheckpointError:
        return True


def data_summary(imageset: ImageSet) -> dict[str, Any]:
    summary = {
        "source": imageset.source,
        "n": len(imageset),
        "image_size": list(imageset.image_size),
        "dropped": imageset.dropped,
    }
    if imageset.is_ordinal:
        summary["grades"] = imageset.grade_names
        summary["counts"] = imageset.counts()
    else:
        t = imageset.targets
        summary["target"] = {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean())}
    return summary
