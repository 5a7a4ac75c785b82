"""A run's model card (RUN/model_card.md): gathered here, rendered by ``evaluation/card.py``.

Training writes it once it has calibrated the run; ``imgrade evaluate`` (on the run's own test
split) and ``imgrade calibrate`` write it again with their figures. ``imgrade export`` carries it
into the ONNX file. The card names its data, never a path of the machine that trained the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from imgrade.config import RunConfig
from imgrade.core.io import write_text
from imgrade.core.names import MODEL_CARD, without_paths
from imgrade.core.version import __version__
from imgrade.data.imageset import ImageSet
from imgrade.evaluation.card import render_model_card
from imgrade.models.backbones import describe
from imgrade.models.factory import head_class
from imgrade.models.timm_backbone import HUB
from imgrade.pipeline.members import member_seed
from imgrade.pipeline.runs import data_summary
from imgrade.runtime.grading import Engine

logger = logging.getLogger(__name__)


def write_model_card(
    run: Path,
    grader: Engine,
    cfg: RunConfig,
    imageset: ImageSet,
    split: dict[str, np.ndarray],
    test_metrics: dict[str, Any] | None,
) -> Path:
    """Write ``run``/model_card.md (atomically) from the run's data, recipe, calibration and ``test_metrics``.

    ``grader`` grades as the run does by default; ``test_metrics`` are what evaluate measures on the
    run's test split with it (None when that split is empty).
    """
    card = model_card(run, grader, cfg, imageset, split, test_metrics)
    path = Path(run) / MODEL_CARD
    write_text(path, render_model_card(card))
    logger.info(f"model card -> {path}")
    return path


def model_card(
    run: Path,
    grader: Engine,
    cfg: RunConfig,
    imageset: ImageSet,
    split: dict[str, np.ndarray],
    test_metrics: dict[str, Any] | None,
) -> dict[str, Any]:
    """The dict :func:`imgrade.evaluation.card.render_model_card` renders."""
    return {
        "name": Path(run).resolve().name,
        "imgrade_version": __version__,
        "data": _data(cfg, imageset, split),
        "recipe": _recipe(cfg, grader),
        "test": test_metrics,
        "calibration": _calibration(grader, cfg),
    }


def _data(cfg: RunConfig, imageset: ImageSet, split: dict[str, np.ndarray]) -> dict[str, Any]:
    data: dict[str, Any] = {
        **data_summary(imageset),  # as data.json has it, with the source by name
        "source": without_paths(imageset.source, [cfg.data.path]),
        "view": cfg.data.view,
        "split_rule": cfg.data.split,
        "split": {},
    }
    for name in ("train", "val", "cal", "test"):
        if name in split:
            part = imageset.subset(split[name])
            data["split"][name] = {"n": len(part), "counts": part.counts() if imageset.is_ordinal else None}
    return data


def _recipe(cfg: RunConfig, grader: Engine) -> dict[str, Any]:
    model, train = cfg.model, cfg.train
    augment = "off"
    if train.augment:
        extras = {"color jitter": train.color_jitter, "rotate": train.rotate, "blur": train.blur}
        augment = f"flips and shifts ({train.shift:g})" + "".join(f", {k} {v:g}" for k, v in extras.items() if v)
    k = int(getattr(grader, "members", 1) or 1)
    return {
        "task": model.task,
        "network": describe(model.backbone, model.depth),
        "head": _head(model.task, model.head),
        "loss": model.head_settings().get("loss", f"the {model.task} head's own"),
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "lr": train.lr,
        "augment": augment,
        "class_weight": train.class_weight,
        "pretrained": _name(model.pretrained),
        "init": _name(train.init),
        "ema": train.ema or None,
        **(_teaching(cfg) if train.teacher else {}),
        "seed": train.seed,
        "tta": bool(grader.tta),
        "ensemble": {"members": k, "seeds": [member_seed(train.seed, k, i) for i in range(k)]} if k > 1 else None,
    }


def _teaching(cfg: RunConfig) -> dict[str, Any]:
    """The teacher, its share of the loss and the unlabelled photos of a taught run."""
    return {
        "teacher": _name(cfg.train.teacher),
        "distill_weight": cfg.train.distill_weight,
        "unlabeled": _name(cfg.data.unlabeled) if cfg.data.unlabeled else "none",
    }


def _calibration(grader: Engine, cfg: RunConfig) -> dict[str, Any] | None:
    if grader.grade_names is None or not grader.calibration:
        return None
    conformal = grader.conformal
    return {
        "rule": grader.rule,
        "cut_points": grader.cut_points,
        "reason": (grader.thresholds or {}).get("reason"),
        "objective": cfg.calibrate.objective,
        "folds": cfg.calibrate.folds,
        "grade_sets": {"kind": conformal.kind, "alpha": conformal.alpha, "n": conformal.n} if conformal else None,
    }


def _head(task: str, head: str) -> str:
    if head != "auto":
        return head
    return f"auto: {getattr(head_class(task), 'default_architecture', '?')}"


def _name(path: str | None) -> str | None:
    """A weights file or run by its name (the hub's weights as the hub's name)."""
    if path is None or path == HUB:
        return path
    return without_paths(str(path), [path])
