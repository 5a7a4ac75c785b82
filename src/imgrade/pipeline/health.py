"""After a network trains: warnings about a model that trained badly, its cut points and grade
sets fitted on validation, and its model card."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from imgrade.config import RunConfig
from imgrade.core.preprocess import nhwc_to_tensor, to_input
from imgrade.data.imageset import ImageSet
from imgrade.pipeline.calibrator import calibrate_run
from imgrade.pipeline.evaluator import refresh_model_card
from imgrade.runtime.run import RunFolder
from imgrade.runtime.torch_engine import Outputs, TorchEngine

logger = logging.getLogger(__name__)

Split = dict[str, np.ndarray]


def check_and_calibrate(cfg: RunConfig, out: Path, imageset: ImageSet, split: Split, card: bool) -> None:
    """Warn about a network that trained badly, fit cut points and grade sets on validation, then
    (``card``: not for an ensemble's member) grade the test split once for the model card."""
    folder = RunFolder.open(out)
    predictor = folder.grader(device=cfg.train.device, tta=False)
    val_set = imageset.subset(split["val"])
    val_outputs = predictor.outputs(val_set.images)
    for warning in health_warnings(predictor, val_set, val_outputs):
        logger.warning(f"warning: {warning}")
    if imageset.is_ordinal:
        calibrate_run(folder, predictor, imageset, split, cfg.calibrate, strict=False, val_outputs=val_outputs)
    if card:
        refresh_model_card(out, predictor.with_tta() if cfg.calibrate.tta else predictor, cfg, imageset, split)


def health_warnings(predictor: TorchEngine, val_set: ImageSet, outputs: Outputs) -> list[str]:
    """Warnings about a model that trained badly: dead hidden units, near-constant predictions."""
    warnings = []
    model = predictor.model
    with torch.no_grad():
        x = nhwc_to_tensor(val_set.images[:512])
        hidden = model.head.hidden(model.features(to_input(x, predictor.mean, predictor.device)))
    if hidden is not None and len(hidden):
        dead = int((hidden.amax(dim=0) <= 0).sum())
        if dead > hidden.shape[1] // 2:
            warnings.append(
                f"{dead} of the head's {hidden.shape[1]} hidden ReLU units never fire on the validation images "
                "(dead ReLUs): retrain with --head linear or another --seed"
            )
    spread, target_spread = float(np.std(outputs.scores)), float(np.std(val_set.targets))
    if len(outputs.scores) > 1 and target_spread > 0 and spread < 0.1 * target_spread:
        warnings.append(
            f"the predictions on validation are near constant (std {spread:.3g} against {target_spread:.3g} for the "
            "targets): the model learned little; train longer, or try another --seed or --task"
        )
    return warnings
