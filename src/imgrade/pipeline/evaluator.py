"""``imgrade evaluate``: grade a run's test split (or any image set), write metrics, plots and a report.

The table printed, metrics.json, predictions.csv, the pictures and report.html all come from one
pass of the calibrated grader over the images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from imgrade.calibration import set_summary
from imgrade.config import DataConfig, RunConfig
from imgrade.core.checkpoint import save_json
from imgrade.core.errors import ConfigError, DataError, ImgradeError
from imgrade.core.io import write_text
from imgrade.core.names import MODEL_CARD, without_paths
from imgrade.core.registry import head_entry
from imgrade.core.rundir import inside, member_dir, read_history, rewriting_run, run_folder
from imgrade.data.imageset import ImageSet
from imgrade.data.loader import load_dataset
from imgrade.evaluation.gallery import DEFAULT_PER_GRADE, GalleryPhotos
from imgrade.evaluation.metrics import continuous_metrics, grade_decision_metrics, ordinal_metrics
from imgrade.evaluation.outputs import evaluation_plots, run_label, write_predictions
from imgrade.evaluation.report import format_members_table, format_metrics_table, write_run_report
from imgrade.pipeline.acceptance import acceptance_card, file_facts
from imgrade.pipeline.model_card import write_model_card
from imgrade.runtime.grading import Engine, Outputs
from imgrade.runtime.run import RunFolder
from imgrade.runtime.torch_engine import TorchEngine

logger = logging.getLogger(__name__)


def evaluate(
    run: str | Path,
    *,
    data: str | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    tta: bool | None = None,
    gallery: int = DEFAULT_PER_GRADE,
    runtime: str = "auto",
) -> dict[str, Any]:
    """Score the run's test split (or every image of ``data``); write predictions, metrics, plots, report.

    ``run`` is a run folder or checkpoint, or an exported ``.onnx`` file (the artifact a line runs:
    then ``data`` is needed, and :func:`evaluate_file` grades with ONNX Runtime). With ``tta``
    every image is graded as the average of a few views of it. An ensemble's members are scored on
    the same images too, so the table shows what the ensemble adds. report.html shows the
    ``gallery`` worst-graded photos of each grade and of each confusion cell (0: none).

    While it writes into the run folder (its test split's model card, the default ``out``, or an
    ``out`` inside the run) it holds the run's lock, as ``imgrade train`` does.

    Raises:
        ConfigError: a training holds the run this evaluation would write into: wait for it to finish.
    """
    if gallery < 0:
        raise ConfigError(f"--gallery {gallery} is negative: give the photos to show per grade, or 0 for none")
    if Path(run).suffix.lower() == ".onnx":
        return evaluate_file(run, data=data, out=out, tta=tta, gallery=gallery, runtime=runtime)
    if runtime != "auto":
        raise ConfigError(
            f"--runtime {runtime} grades an .onnx file, and {run} is a run (graded by PyTorch): export it "
            f"(`imgrade export {run} --out model.onnx`) and evaluate model.onnx --data PHOTOS --runtime {runtime}"
        )
    writes = data is None or out is None or inside(out, run_folder(run))
    with rewriting_run(run, "evaluate", writes=writes):
        return _evaluate_run(run, data=data, out=out, device=device, tta=tta, gallery=gallery)


def _evaluate_run(
    run: str | Path, *, data: str | None, out: str | Path | None, device: str, tta: bool | None, gallery: int
) -> dict[str, Any]:
    folder = RunFolder.open(run)
    run, run_dir, cfg = Path(run), folder.path, folder.config
    predictor = folder.grader(device=device, tta=tta)
    own = None  # the run's whole image set and split, when grading its own test split
    if data is None:
        own = folder.data()
        imageset = own[0].subset(own[1]["test"])
        name = "test"
    else:
        imageset = _load_data(data, predictor, cfg.data)
        name = _data_name(data)
    if len(imageset) == 0:
        raise DataError(f"no images to evaluate in {data or cfg.data.path}: the test split is empty; pass --data")
    out_dir = Path(out) if out is not None else run_dir / f"eval-{name}{'-tta' if predictor.tta else ''}"
    logger.info(f"evaluating {len(imageset)} images from {imageset.source} -> {out_dir}")

    metrics, outputs, predicted, sets = grade_metrics(predictor, imageset)
    grade_names = predictor.grade_names
    if own is not None and predictor.tta == bool(cfg.calibrate.tta):  # graded as the run grades by default
        write_model_card(run_dir, predictor, cfg, *own, metrics)
    metrics = {"data": imageset.source, "split": name, "task": predictor.task, **metrics}
    if predictor.members > 1 and grade_names is not None:
        metrics["members"] = _member_metrics(run_dir, predictor, imageset, device, predictor.tta)
    if data is not None and grade_names is not None:
        gap = _domain_gap(run, predictor, cfg, Path(data), metrics)
        if gap is not None:
            metrics["domain_gap"] = gap
    title = f"{run_label(run_dir)}: {name} ({len(imageset)} images)"
    history = read_history(run_dir / "history.csv")
    return _write_evaluation(
        out_dir, predictor, imageset, metrics, outputs, predicted, sets, title, run_dir, cfg, history, gallery
    )


def evaluate_file(
    model: str | Path,
    *,
    data: str | None,
    out: str | Path | None = None,
    tta: bool | None = None,
    gallery: int = DEFAULT_PER_GRADE,
    runtime: str = "auto",
) -> dict[str, Any]:
    """Accept an exported ``.onnx`` file on photos: what ``evaluate`` writes for a run, from the file
    that goes to the line (its own decision and calibration, int8 or fp32), graded by the runtime
    that will grade it there: ``runtime`` "auto" picks as ``predict`` does on this machine (ONNX
    Runtime, or OpenVINO in bf16 where the file's bf16 check passed), or "onnx" or "openvino".

    Writes into ``out`` (default: ``MODEL-eval-DATA/`` beside the file) predictions.csv,
    metrics.json, the pictures, report.html, and model_card.md: the file's model card followed by
    this acceptance test, which names the file by its SHA-256.

    Raises:
        ConfigError: ``data`` is missing (the file holds no photos).
        CheckpointError: the file is not an imgrade grader.
    """
    from imgrade.runtime import load_grader

    model = Path(model)
    if data is None:
        raise ConfigError(
            f"{model.name} is an exported grader and holds no photos: pass the photos to grade with --data"
        )
    if runtime not in ("auto", "onnx", "openvino"):
        raise ConfigError(f"--runtime {runtime} cannot grade {model.name}: use auto, onnx or openvino")
    grader = load_grader(model, runtime=runtime, tta=tta)
    imageset = _load_data(data, grader, DataConfig())
    name = _data_name(data)
    if len(imageset) == 0:
        raise DataError(f"no images to evaluate in {data}: pass a folder, CSV or CUCUMBER-9 set with photos")
    out_dir = Path(out) if out is not None else model.parent / f"{model.stem}-eval-{name}"
    logger.info(f"evaluating {model.name} on {len(imageset)} images from {imageset.source} -> {out_dir}")
    metrics, outputs, predicted, sets = grade_metrics(grader, imageset)
    facts = file_facts(model, grader)
    metrics = {"data": imageset.source, "split": name, "task": grader.task, "model": facts, **metrics}
    title = f"{model.name}: {name} ({len(imageset)} images)"
    card = out_dir / MODEL_CARD
    out_dir.mkdir(parents=True, exist_ok=True)
    # like the run's card, it names the photos by their folder, never by a path of this machine
    named = {**metrics, "data": without_paths(metrics["data"], [data])}
    write_text(card, acceptance_card(grader.model_card, facts, named))
    return _write_evaluation(
        out_dir, grader, imageset, metrics, outputs, predicted, sets, title, model, None, gallery=gallery, card=card
    )


def _load_data(data: str | Path, grader: Engine, cfg: DataConfig) -> ImageSet:
    """The photos of ``data`` prepared as ``grader`` takes them, labelled with its grades."""
    data_cfg = DataConfig(
        path=str(data),
        view=cfg.view,
        image_size=grader.image_size,
        resize=grader.resize_mode,
        target_column=cfg.target_column,
        target=cfg.target,
    )
    return load_dataset(data_cfg, grades=grader.grade_names)


def _data_name(data: str | Path) -> str:
    return Path(data).name.removesuffix(".tar.gz").removesuffix(".csv") or "data"


def _write_evaluation(
    out_dir: Path,
    grader: Engine,
    imageset: ImageSet,
    metrics: dict[str, Any],
    outputs: Outputs,
    predicted: np.ndarray | None,
    sets: np.ndarray | None,
    title: str,
    source: Path,
    cfg: RunConfig | None,
    history: list | None = None,
    gallery: int = DEFAULT_PER_GRADE,
    card: Path | None = None,
) -> dict[str, Any]:
    """predictions.csv, the pictures, metrics.json and report.html of one evaluation in ``out_dir``
    (``card``: a model card already written there, listed with the files)."""
    grade_names = grader.grade_names
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.csv", imageset, outputs.scores, predicted, sets, grade_names)
    label = run_label(source)
    pictures = evaluation_plots(
        out_dir,
        history,
        imageset.targets,
        outputs.scores,
        grade_names,
        metrics,
        grader.thresholds,
        title,
        label,
        frozen_epochs=cfg.train.freeze_backbone_epochs if cfg is not None else 0,
    )
    metrics["files"] = {
        "predictions": str(out_dir / "predictions.csv"),
        "metrics": str(out_dir / "metrics.json"),
        "report": str(out_dir / "report.html"),
        **{k: str(v) for k, v in pictures.items()},
        **({"model_card": str(card)} if card is not None else {}),
    }
    save_json(out_dir / "metrics.json", metrics)
    photos = None
    if grade_names is not None:  # the photos the report's gallery draws from
        photos = GalleryPhotos(
            imageset.images, imageset.ids, imageset.targets.astype(np.int64), outputs.scores, predicted, gallery
        )
    write_run_report(
        out_dir / "report.html", title, metrics, grade_names, pictures, cfg, source, grader.thresholds, photos
    )
    logger.info("wrote " + ", ".join(str(p) for p in [out_dir / "metrics.json", out_dir / "report.html"]))
    return metrics


def format_evaluation(metrics: dict[str, Any]) -> str:
    """What ``imgrade evaluate`` prints: the metrics table, and an ensemble's members beside it."""
    text = format_metrics_table(metrics, None)
    if metrics.get("members"):
        text += "\n" + format_members_table(metrics)
    return text


def _domain_gap(
    run: Path, predictor: TorchEngine, cfg: RunConfig, data: Path, metrics: dict[str, Any]
) -> dict[str, Any] | None:
    """The run's metrics on its own test split next to those on ``data`` (synthetic vs real: the sim-to-real gap).

    None when ``data`` is the run's own data, or that data can no longer be read.
    """
    if cfg.data.path is None or Path(cfg.data.path).resolve() == data.resolve():
        return None
    try:
        own, split = RunFolder.open(run).data(cfg)
    except ImgradeError as e:
        logger.info(f"no domain gap: the run's own data cannot be read ({e})")
        return None
    test = own.subset(split["test"])
    if len(test) == 0:
        return None
    own_metrics = score(predictor, test)[0]
    used = metrics["decisions"][metrics["decisions"]["used"]] if metrics.get("decisions") else metrics
    this = {"n": metrics["n"], **{k: used[k] for k in grade_decision_metrics()}}
    return {
        "own": {"data": own.source, **own_metrics},
        "this": {"data": metrics["data"], **this},
        "gap": {
            k: None if own_metrics[k] is None or this[k] is None else this[k] - own_metrics[k]
            for k in grade_decision_metrics()
        },
    }


def _member_metrics(
    run_dir: Path, predictor: TorchEngine, imageset: ImageSet, device: str, tta: bool
) -> list[dict[str, Any]]:
    """Each member of an ensemble graded alone (its own calibration) on the same images."""
    y = imageset.targets.astype(np.int64)
    rows = []
    for i in range(predictor.members):
        try:
            member = TorchEngine.from_run(member_dir(run_dir, i), device=device, tta=tta)
        except ImgradeError as e:
            logger.info(f"member {i} left out of the table: {e}")
            continue
        outputs = member.outputs(imageset.images)
        m = ordinal_metrics(y, outputs.scores, member.grade_names, y_pred=member.grades(outputs))
        seed = member.checkpoint.config.train.seed
        rows.append({"member": f"m{i}", "seed": seed, **{k: m[k] for k in grade_decision_metrics()}})
    return rows


def _decision_metrics(predictor: Engine, outputs: Outputs, y: np.ndarray) -> dict[str, Any]:
    """Headline metrics for each way of turning scores into grades, so the gain of tuning shows."""
    names = predictor.grade_names
    rule = head_entry(predictor.task).own_decision
    decisions = {rule: outputs.native}
    if predictor.calibration is not None and predictor.calibration.tuned:
        decisions["tuned thresholds"] = predictor.calibration.grades(outputs.scores, outputs.native)
    result = {}
    for label, pred in decisions.items():
        m = ordinal_metrics(y, outputs.scores, names, y_pred=pred)
        result[label] = {k: m[k] for k in grade_decision_metrics()}
    result["used"] = "tuned thresholds" if len(decisions) > 1 else rule
    return result


def grade_metrics(
    grader: Engine, imageset: ImageSet
) -> tuple[dict[str, Any], Outputs, np.ndarray | None, np.ndarray | None]:
    """One pass of ``grader`` over ``imageset``: its metrics (the calibrated decision, each decision's
    headline, grade-set coverage; a continuous target's MAE, RMSE...), outputs, grades and grade sets."""
    outputs = grader.outputs(imageset.images)
    y = imageset.targets
    if grader.grade_names is None:
        return continuous_metrics(y, outputs.scores), outputs, None, None
    y_int = y.astype(np.int64)
    predicted = grader.grades(outputs)
    metrics = ordinal_metrics(y_int, outputs.scores, grader.grade_names, y_pred=predicted)
    metrics["decisions"] = _decision_metrics(grader, outputs, y_int)
    sets = grader.sets(outputs)
    if sets is not None:
        metrics["grade_sets"] = {
            "alpha": grader.conformal.alpha,
            "kind": grader.conformal.kind,
            **set_summary(sets, y_int, grader.grade_names),
        }
    return metrics, outputs, predicted, sets


def refresh_model_card(
    run: Path, grader: TorchEngine, cfg: RunConfig, imageset: ImageSet, split: dict[str, np.ndarray]
) -> Path:
    """Score the run's test split once with ``grader`` and write the run's model card with the figures."""
    test = imageset.subset(split["test"])
    metrics = grade_metrics(grader, test)[0] if len(test) else None
    return write_model_card(run, grader, cfg, imageset, split, metrics)


def score(predictor: TorchEngine, test: ImageSet) -> tuple[dict[str, Any], np.ndarray]:
    """``predictor``'s calibrated grades of ``test`` and their headline metrics (``grade_decision_metrics()``)."""
    if predictor.grade_names != test.grade_names:
        raise DataError(
            f"the model grades {', '.join(predictor.grade_names or [])} but the photos are graded "
            f"{', '.join(test.grade_names or [])}"
        )
    outputs = predictor.outputs(test.images)
    predicted = predictor.grades(outputs)
    m = ordinal_metrics(test.targets.astype(np.int64), outputs.scores, test.grade_names, y_pred=predicted)
    return {"n": len(test), **{k: m[k] for k in grade_decision_metrics()}}, predicted
