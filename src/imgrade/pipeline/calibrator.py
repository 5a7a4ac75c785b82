"""``imgrade calibrate``: cut points and grade sets fitted on a run's validation split, kept in best.pt.

Training calls :func:`calibrate_run` when it finishes; the verb refits a finished run with
another objective, alpha or number of folds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from imgrade.calibration import choose_thresholds, fit_conformal, min_calibration_size, prediction_sets, set_summary
from imgrade.calibration.decision import Calibration
from imgrade.config import dump_config
from imgrade.core.errors import ConfigError, DataError, ImgradeError
from imgrade.core.io import write_text
from imgrade.core.registry import head_entry
from imgrade.core.rundir import rewriting_run
from imgrade.data.imageset import ImageSet
from imgrade.pipeline.evaluator import refresh_model_card
from imgrade.runtime.run import RunFolder
from imgrade.runtime.torch_engine import Outputs, TorchEngine

logger = logging.getLogger(__name__)


def calibrate(
    run: str | Path,
    *,
    objective: str | None = None,
    alpha: float | None = None,
    folds: int | None = None,
    device: str = "auto",
) -> Calibration:
    """Fit cut points and conformal grade sets on the run's validation split; store them in best.pt.

    Holds the run's lock (``imgrade.core.rundir.run_lock``) throughout, so it never rewrites a run
    that a training is still writing.

    Raises:
        ConfigError: a training (or another command) holds the run: wait for it to finish.
    """
    with rewriting_run(run, "calibrate"):
        return _calibrate(run, objective=objective, alpha=alpha, folds=folds, device=device)


def _calibrate(
    run: str | Path, *, objective: str | None, alpha: float | None, folds: int | None, device: str
) -> Calibration:
    folder = RunFolder.open(run)
    run = folder.path
    cfg = folder.config.with_overrides(
        {"calibrate.objective": objective, "calibrate.alpha": alpha, "calibrate.folds": folds}
    )
    if folder.checkpoint.grade_names is None:
        raise ConfigError(f"{run} predicts a continuous target: thresholds and grade sets need graded data")
    predictor = folder.grader(device=device, tta=False)
    imageset, split = folder.data(cfg)
    val_set = imageset.subset(split["val"])
    cal_set = imageset.subset(split["cal"]) if "cal" in split else None
    needed = min_calibration_size(cfg.calibrate.alpha)
    available = len(cal_set if cal_set is not None else val_set)
    if available < needed:  # checked first, so a refused request prints nothing else
        raise DataError(
            f"alpha {cfg.calibrate.alpha} needs at least {needed} validation images for grade sets with a coverage "
            f"guarantee, but {run} has {available}: raise --alpha or retrain with a larger validation split"
        )
    calibration = calibrate_run(folder, predictor, imageset, split, cfg.calibrate, strict=True)
    write_text(run / "config.yaml", dump_config(cfg))
    refresh_model_card(run, predictor.with_tta() if cfg.calibrate.tta else predictor, cfg, imageset, split)
    return calibration


def calibrate_run(
    run: RunFolder,
    predictor: TorchEngine,
    imageset: ImageSet,
    split: dict[str, np.ndarray],
    cfg,
    *,
    strict: bool,
    val_outputs: Outputs | None = None,
) -> Calibration:
    """Calibrate ``run`` twice, on plain outputs and on test-time augmented ones (``--tta``), so
    either way of grading has cut points and grade sets fitted to its own scores; both are kept in
    best.pt with one rewrite, and ``predictor`` grades with them from then on. Returns the plain one."""
    val_set = imageset.subset(split["val"])
    cal_set = imageset.subset(split["cal"]) if "cal" in split else None
    outputs = val_outputs if val_outputs is not None else predictor.outputs(val_set.images)
    plain = _fit_calibration(predictor, val_set, outputs, cfg, strict=strict, cal_set=cal_set)
    augmented = predictor.with_tta()
    tta = _fit_calibration(augmented, val_set, augmented.outputs(val_set.images), cfg, strict=strict, cal_set=cal_set)
    predictor.checkpoint = run.save_calibrations(plain, tta)
    return plain


def _fit_calibration(
    predictor: TorchEngine,
    val_set: ImageSet,
    outputs: Outputs,
    cfg,
    *,
    strict: bool,
    cal_set: ImageSet | None = None,
) -> dict:
    """Choose cut points (tuned vs the head's own rule, by cross-validation) and fit conformal sets.

    The grade sets are calibrated on ``cal_set`` when the run held one out, else on ``val_set``.
    """
    num_grades = len(predictor.grade_names)
    y = val_set.targets.astype(np.int64)
    entry = head_entry(predictor.task)
    rule = entry.own_decision if entry.cut_points is not None else f"the {entry.own_decision}"
    choice = choose_thresholds(
        y,
        outputs.scores,
        num_grades,
        objective=cfg.objective,
        folds=cfg.folds,
        seed=0,
        baseline=outputs.native,
        baseline_name=rule,
    )
    mode = "with test-time augmentation, " if predictor.tta else ""
    logger.info(f"{mode}thresholds: {choice.reason}")
    conformal = None
    if cal_set is not None:
        y, outputs = cal_set.targets.astype(np.int64), predictor.outputs(cal_set.images)
    where = "held-out calibration" if cal_set is not None else "validation"
    try:
        conformal = fit_conformal(y, scores=outputs.scores, probabilities=outputs.probabilities, alpha=cfg.alpha)
    except ImgradeError as e:
        if strict:
            raise
        logger.warning(f"warning: no grade sets: {e}")
    else:
        sets = prediction_sets(
            conformal, scores=outputs.scores, probabilities=outputs.probabilities, num_grades=num_grades
        )
        summary = set_summary(sets, y, predictor.grade_names)
        logger.info(
            f"{mode}grade sets: {conformal.kind}, alpha {cfg.alpha}: {where} coverage {summary['coverage']:.3f}, "
            f"mean size {summary['mean_size']:.2f} grades ({conformal.n} calibration images)"
        )
    return Calibration(choice.to_dict(), conformal)
