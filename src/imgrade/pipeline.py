"""One function per verb. Each is callable from Python; the CLI only parses, calls and prints."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import imgrade
from imgrade.config import DataConfig, RunConfig, dump_config, load_config, parse_split
from imgrade.calibrate import (
    apply_thresholds, choose_thresholds, fit_conformal, min_calibration_size, prediction_sets, set_summary,
)
from imgrade.core.checkpoint import LAST, find_run_checkpoint, load_checkpoint, save_checkpoint, save_json
from imgrade.core.device import resolve_device, seed_everything, set_determinism
from imgrade.core.errors import CheckpointError, ConfigError, DataError, ImgradeError
from imgrade.core.io import remove_stale_temporaries, write_text
from imgrade.core.preprocess import mean_image, nhwc_to_tensor, to_input
from imgrade.core.registry import head_entry
from imgrade.core.rundir import MEMBERS, load_split, member_dir, read_history, run_lock, save_split, write_history
from imgrade.data.imageset import ImageSet
from imgrade.data.loader import detect_format, load_dataset
from imgrade.data.splits import hold_out_calibration, make_split
from imgrade.evaluate import plots
from imgrade.evaluate.outputs import evaluation_plots, write_predictions
from imgrade.evaluate.metrics import continuous_metrics, ordinal_metrics
from imgrade.evaluate.report import format_members_table, format_metrics_table, write_run_report
from imgrade.models.factory import build_model, head_settings
from imgrade.models.axes import CUCUMBER9_GRADES, CUCUMBER9_TABLE, GradeAxes, find_grade_axes, parse_grade_axes
from imgrade.models.backbones import HUB, check_backbone, describe
from imgrade.models.heads import balanced_class_weights
from imgrade.recipe import parse_recipes
from imgrade.runtime.files import predict  # noqa: F401  (torch-free; `imgrade predict` imports it directly)
from imgrade.runtime.predictor import CALIBRATION_TTA, Outputs, Predictor
from imgrade.train import distributed
from imgrade.train.init import load_init, plan_init
from imgrade.train.loop import FitData, data_device, fit


LOSS_PLOT_EVERY_S = 10.0
"""loss_curve.png is redrawn at most this often during training (history.csv after every epoch)."""


def log(message: str) -> None:
    if distributed.is_main():  # under torchrun, one copy of each line
        print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- train


def train(
    cfg: RunConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
    split: dict[str, np.ndarray] | None = None, imageset: ImageSet | None = None,
) -> list[dict]:
    """Train a model on ``cfg.data.path`` into the run folder ``out``; returns the epoch history.

    ``split`` (train/val/test indexes) and ``imageset`` (the loaded data) let ``compare`` give
    every formulation the same images without reading them again.

    Under torchrun every process calls this; rank 0 alone reads and writes ``out`` and the others
    receive what they need from it (see train/distributed.py).
    """
    with distributed.process_group():
        return _train(cfg, Path(out), resume, overwrite, split, imageset)


def _train(
    cfg: RunConfig, out: Path, resume: bool, overwrite: bool, split: dict[str, np.ndarray] | None, imageset: ImageSet | None
) -> list[dict]:
    with contextlib.ExitStack() as lock:

        def prepare():
            lock.enter_context(run_lock(out))  # held by rank 0 until training, calibration and reports are done
            return _prepare_out(cfg, out, resume, overwrite)

        cfg, resume_state = distributed.on_main(prepare)
        if cfg.train.ensemble > 1:
            return _train_ensemble(cfg, out, resume, split, imageset)
        return _train_locked(cfg, out, resume_state, split, imageset)


def member_seed(seed: int, members: int, index: int) -> int:
    """The seed of ensemble member ``index``: ensembles with seeds 0, 1, 2 share no member, and
    member 0 of the seed-0 ensemble is the plain seed-0 run.

    >>> [member_seed(1, 3, i) for i in range(3)]
    [3, 4, 5]
    """
    return seed * members + index


def _train_ensemble(
    cfg: RunConfig, out: Path, resume: bool, split: dict[str, np.ndarray] | None, imageset: ImageSet | None
) -> list[dict]:
    """Train ``cfg.train.ensemble`` members on one split, each a complete run in ``out/members/mI``
    (so resume and crash safety hold per member), then write ``out/best.pt`` holding them all and
    calibrate the ensemble on its own validation outputs. Returns the members' mean history."""
    k = cfg.train.ensemble
    imageset = imageset if imageset is not None else load_dataset(cfg.data)
    log(f"data: {imageset.source}: {len(imageset)} images, {imageset.image_size[0]}x{imageset.image_size[1]}")
    have_split = resume and (out / "split.json").is_file()
    split = distributed.on_main(_choose_split, cfg, out, imageset, have_split, split)
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if not have_split:
            write_text(out / "config.yaml", dump_config(cfg))
            save_split(out / "split.json", split, imageset)
            save_json(out / "data.json", _data_summary(imageset))
    histories = []
    for i in range(k):
        seed = member_seed(cfg.train.seed, k, i)
        member = member_dir(out, i)
        member_cfg = cfg.with_overrides({"train.ensemble": 1, "train.seed": seed})
        state = distributed.on_main(_member_state, member)
        log(f"\nensemble member {i + 1}/{k} (seed {seed}) -> {member}" + {"done": ": already trained", "resume": ": resuming"}.get(state, ""))
        if state == "done":
            histories.append(read_history(member / "history.csv"))
            continue
        histories.append(_train(member_cfg, member, state == "resume", False, split, imageset))
    history = _mean_history(histories)
    if not distributed.is_main():
        return history
    _assemble_ensemble(cfg, out, k)
    write_history(out / "history.csv", history)
    plots.plot_loss_curve(history, out / "loss_curve.png", title=f"loss: {out.name} (mean of {k} members)", frozen_epochs=cfg.train.freeze_backbone_epochs)
    if imageset.is_ordinal:
        predictor = Predictor.from_run(out, device=cfg.train.device, tta=False)
        _calibrate_run(out, predictor, imageset, split, cfg.calibrate, strict=False)
    log(f"ensemble of {k} members -> {out / 'best.pt'}")
    return history


def _member_state(member_dir: Path) -> str:
    """'done' (trained and calibrated), 'resume' (begun) or 'fresh'."""
    if not (member_dir / "config.yaml").is_file():
        return "fresh"
    try:
        last = load_checkpoint(member_dir / LAST) if (member_dir / LAST).is_file() else {}
    except CheckpointError:
        return "resume"
    if last.get("finished") and not (last.get("grade_names") and _calibration_missing(member_dir)):
        return "done"
    return "resume"


def _mean_history(histories: list[list[dict]]) -> list[dict]:
    """Per epoch, the mean of the members' losses (what the ensemble's loss curve shows)."""
    rows = []
    for epoch_rows in zip(*histories):
        row = dict(epoch_rows[0])
        for key in ("train_loss", "val_loss", "val_mae", "seconds"):
            row[key] = float(np.mean([float(r[key]) for r in epoch_rows]))
        rows.append(row)
    return rows


def _assemble_ensemble(cfg: RunConfig, out: Path, k: int) -> None:
    """One checkpoint with every member's best weights (``members.I.*``), graded as one network."""
    states = [load_checkpoint(member_dir(out, i) / "best.pt") for i in range(k)]
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if not torch.equal(state["mean_image"], first["mean_image"]):
            raise CheckpointError(f"{member_dir(out, i)} was trained on another split than member 0: train the ensemble again with --overwrite")
    payload = {key: value for key, value in first.items() if key not in ("model_state", "epoch", "val_loss", "calibration", CALIBRATION_TTA)}
    payload.update({
        "config": cfg.to_dict(),
        "ensemble": k,
        "member_epochs": [int(state["epoch"]) for state in states],
        "val_loss": float(np.mean([float(state["val_loss"]) for state in states])),
        "model_state": {f"members.{i}.{key}": value for i, state in enumerate(states) for key, value in state["model_state"].items()},
        "calibration": None,
    })
    save_checkpoint(out / "best.pt", payload)


def _train_locked(
    cfg: RunConfig, out: Path, resume_state: dict | None, split: dict[str, np.ndarray] | None, imageset: ImageSet | None
) -> list[dict]:
    world = distributed.world_size()
    if cfg.train.batch_size < world:
        raise ConfigError(
            f"--batch-size {cfg.train.batch_size} is the global batch, smaller than the {world} processes torchrun "
            f"started: each needs at least one image per step; use --batch-size {world} or more"
        )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    set_determinism(cfg.train.deterministic)
    torch.backends.cudnn.benchmark = not cfg.train.deterministic  # the image size is fixed: time cuDNN's algorithms once
    device = distributed.process_device(resolve_device(cfg.train.device))

    imageset = imageset if imageset is not None else load_dataset(cfg.data)
    log(f"data: {imageset.source}: {len(imageset)} images, {imageset.image_size[0]}x{imageset.image_size[1]}")
    if head_entry(cfg.model.task).needs_grades and not imageset.is_ordinal:
        raise ConfigError(f"task {cfg.model.task} needs integer grades, but {cfg.data.path} has a continuous target: use --task regression")
    grade_axes = None
    if cfg.model.task == "axes":
        grade_axes, cfg = _grade_axes(cfg, imageset, resume_state)
    elif cfg.model.axes:
        log(f"note: --axes {cfg.model.axes} is read only with --task axes; task {cfg.model.task} ignores it")
    split = distributed.on_main(_choose_split, cfg, out, imageset, resume_state is not None, split)
    sizes = {name: len(index) for name, index in split.items()}
    held = f", {sizes['cal']} held out for grade sets" if "cal" in sizes else ""
    log(f"split: {sizes['train']} train, {sizes['val']} val, {sizes['test']} test{held}")

    # a view, not a copy: a memory-mapped set is read a batch at a time, so it may exceed memory
    x = nhwc_to_tensor(np.asarray(imageset.images))  # (N, 3, H, W) uint8
    y = torch.from_numpy(imageset.targets.astype(np.float32))
    train_idx, val_idx = torch.from_numpy(split["train"]), torch.from_numpy(split["val"])
    mean = mean_image(x, train_idx)  # (3, H, W): the reference's per-pixel mean
    keep = data_device(x, device)
    data = FitData.from_set(x.to(keep), y.to(keep), train_idx, val_idx, mean.to(keep))

    num_grades = len(imageset.grade_names) if imageset.is_ordinal else None
    class_weights = None
    if cfg.train.class_weight == "balanced":
        if num_grades is None:
            raise ConfigError("--class-weight balanced needs graded data, but this target is continuous: drop the flag")
        class_weights = torch.as_tensor(balanced_class_weights(imageset.targets[split["train"]].astype(np.int64), num_grades), dtype=torch.float32)
    model = build_model(
        cfg.model.depth, cfg.model.task, cfg.model.head, cfg.model.loss, num_grades, class_weights,
        **head_settings(cfg.model), grade_axes=grade_axes,
        backbone=cfg.model.backbone, image_size=cfg.data.image_size,
        pretrained=cfg.model.pretrained if resume_state is None else None,  # on --resume, last.pt holds all the weights
    )
    if cfg.model.pretrained and resume_state is None:
        log(f"backbone: {cfg.model.backbone[len('timm:'):]} with the weights of {cfg.model.pretrained}")
    if num_grades is not None:
        model.head.init_from_targets(imageset.targets[split["train"]])
    axes_dict = grade_axes.to_dict() if grade_axes is not None else None
    if cfg.train.init and resume_state is None:  # on --resume, last.pt holds all the weights
        # after init_from_targets, so a loaded head's weights win; every rank reads the same file
        log(load_init(model, plan_init(cfg.train.init, cfg.model, imageset.grade_names, grade_axes=axes_dict)))

    # written only now, so a refused --init (other grades, another depth) leaves nothing in --out
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if resume_state is None:
            write_text(out / "config.yaml", dump_config(cfg))
            save_split(out / "split.json", split, imageset)
            save_json(out / "data.json", _data_summary(imageset))

    model = model.to(device)
    if cfg.train.compile:
        model.compile()  # in place, so parameter names and checkpoints stay as they are
    meta = {
        "imgrade_version": imgrade.__version__,
        "config": cfg.to_dict(),
        "grade_names": imageset.grade_names,
        "image_size": cfg.data.image_size,
        "mean_image": mean,
        "task": cfg.model.task,
        "calibration": None,
        "data_source": imageset.source,
    }
    if axes_dict is not None:
        meta["grade_axes"] = axes_dict  # the runtime rebuilds the head from this, not from the CSV

    last_plot = [-float("inf")]

    def on_epoch_end(history: list[dict]) -> None:
        write_history(out / "history.csv", history)
        # a figure takes ~0.5 s, half an epoch of a few hundred photos: redraw at most every
        # LOSS_PLOT_EVERY_S seconds, and always after the first and the last epoch
        now = time.monotonic()
        if now - last_plot[0] >= LOSS_PLOT_EVERY_S or len(history) == cfg.train.epochs:
            plots.plot_loss_curve(history, out / "loss_curve.png", title=f"loss: {out.name}", frozen_epochs=cfg.train.freeze_backbone_epochs)
            last_plot[0] = now

    t0 = time.perf_counter()
    where = f"{device}" if world == 1 else f"{world} processes ({device.type}, DDP)"
    log(f"training {cfg.model.task} {describe(cfg.model.backbone, cfg.model.depth)} on {where} for {cfg.train.epochs} epochs -> {out}")
    history = fit(model, data, cfg.train, device, out, meta, resume=resume_state, on_epoch_end=on_epoch_end)
    if not distributed.is_main():
        return history  # rank 0 alone checks, calibrates and reports on the files it wrote
    best = min(history, key=lambda r: r["val_loss"])
    log(
        f"done in {time.perf_counter() - t0:.0f}s: best val_loss {best['val_loss']:.4f} (val_mae {best['val_mae']:.3f}) "
        f"at epoch {best['epoch']}"
    )
    predictor = Predictor.from_run(out, device=cfg.train.device, tta=False)
    val_set = imageset.subset(split["val"])
    val_outputs = predictor.outputs(val_set.images)
    for warning in health_warnings(predictor, val_set, val_outputs):
        log(f"warning: {warning}")
    if imageset.is_ordinal:
        _calibrate_run(out, predictor, imageset, split, cfg.calibrate, strict=False, val_outputs=val_outputs)
    return history


def _grade_axes(cfg: RunConfig, imageset: ImageSet, resume_state: dict | None) -> tuple[GradeAxes, RunConfig]:
    """Task axes: the run's grade table, and the config naming the file it came from.

    On --resume the table comes from last.pt: the CSV may have changed or moved since.
    """
    if resume_state is not None and resume_state.get("grade_axes") is not None:
        return GradeAxes.from_dict(resume_state["grade_axes"]), cfg
    table, where = find_grade_axes(cfg.model.axes, cfg.data.path, imageset.grade_names)
    axes = "; ".join(f"{name} {','.join(levels)}" for name, levels in zip(table.axes, table.levels))
    log(f"grade table ({where}): {axes}")
    if Path(where).is_file():  # config.yaml then says which file (also one found beside the data)
        cfg = cfg.with_overrides({"model.axes": str(Path(where).resolve())})
    return table, cfg


def health_warnings(predictor: Predictor, val_set: ImageSet, outputs: Outputs) -> list[str]:
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


def _prepare_out(cfg: RunConfig, out: Path, resume: bool, overwrite: bool) -> tuple[RunConfig, dict | None]:
    """Check ``out`` for a fresh run, or read the run to resume; returns the config and last.pt's state.

    Runs under the run folder's lock, so the temporary files of a writer that was killed are stale
    and go first.
    """
    stale = remove_stale_temporaries(out)
    if stale:
        log(f"removed {len(stale)} unfinished temporary file(s) left by an interrupted run in {out}")
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
    if resume_state is None and cfg.model.task == "axes" and cfg.model.axes:
        if not Path(cfg.model.axes).is_file():  # fails now, before the data is read
            raise ConfigError(f"grade table {cfg.model.axes} does not exist: check the --axes path")
        cfg = cfg.with_overrides({"model.axes": str(Path(cfg.model.axes).resolve())})
    if resume_state is None:
        check_backbone(cfg.model.backbone, cfg.model.pretrained)  # timm, the name, the weights file: before the data is read
    if resume_state is None and cfg.model.pretrained not in (None, HUB):
        cfg = cfg.with_overrides({"model.pretrained": str(Path(cfg.model.pretrained).resolve())})
    if resume_state is None and cfg.train.init:
        find_run_checkpoint(cfg.train.init)  # a wrong path fails now, before the data is read
        cfg = cfg.with_overrides({"train.init": str(Path(cfg.train.init).resolve())})
    return cfg, resume_state


def _choose_split(
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
        for name in ("config.yaml", "split.json", "data.json", "best.pt", LAST, "history.csv", "loss_curve.png"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / MEMBERS, ignore_errors=True)
        return
    finished = False
    if (out / LAST).exists():
        try:
            finished = bool(load_checkpoint(out / LAST).get("finished"))
        except CheckpointError:
            pass
    elif (out / MEMBERS).is_dir() and (out / "best.pt").exists():
        finished = _ensemble_finished(out)
    what = "a finished run" if finished else "an unfinished run"
    fix = "choose another --out or pass --overwrite" if finished else "continue it with --resume, or pass --overwrite to start again"
    raise ConfigError(f"{out} already holds {what}: {fix}")


def _ensemble_finished(out: Path) -> bool:
    try:
        best = load_checkpoint(out / "best.pt")
    except CheckpointError:
        return False
    return bool(best.get("ensemble")) and (best.get("calibration") is not None or not best.get("grade_names"))


def _resume_state(out: Path) -> tuple[RunConfig, dict | None]:
    if not (out / "config.yaml").is_file():
        raise CheckpointError(f"cannot resume: {out} holds no run (no config.yaml): start it with `imgrade train --out {out}`")
    cfg = load_config(out / "config.yaml")
    if cfg.train.ensemble > 1:  # resumed member by member (see _train_ensemble)
        if (out / "best.pt").exists() and _ensemble_finished(out):
            raise ConfigError(f"{out} is already finished (an ensemble of {cfg.train.ensemble}): nothing to resume; evaluate it, or train into another --out")
        log(f"resuming the ensemble in {out}")
        return cfg, None
    if not (out / LAST).is_file():
        log(f"{out} has no finished epoch yet: starting it from the beginning")
        return cfg, None
    state = load_checkpoint(out / LAST)
    if state.get("finished") and state.get("grade_names") and _calibration_missing(out):
        log(f"{out} finished training but was stopped before calibration: calibrating it now")
        return cfg, state
    if state.get("finished"):
        raise ConfigError(f"{out} is already finished ({state['epoch']} epochs): nothing to resume; evaluate it, or train into another --out")
    log(f"resuming {out} after epoch {state['epoch']}/{cfg.train.epochs}")
    return cfg, state


def _calibration_missing(out: Path) -> bool:
    try:
        return load_checkpoint(out / "best.pt").get("calibration") is None
    except CheckpointError:
        return True


def _data_summary(imageset: ImageSet) -> dict[str, Any]:
    summary = {"source": imageset.source, "n": len(imageset), "image_size": list(imageset.image_size), "dropped": imageset.dropped}
    if imageset.is_ordinal:
        summary["grades"] = imageset.grade_names
        summary["counts"] = imageset.counts()
    else:
        t = imageset.targets
        summary["target"] = {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean())}
    return summary


# ----------------------------------------------------------------------------- calibrate


def calibrate(
    run: str | Path, *, objective: str | None = None, alpha: float | None = None, folds: int | None = None, device: str = "auto"
) -> dict[str, Any]:
    """Fit cut points and conformal grade sets on the run's validation split; store them in best.pt."""
    run = Path(run)
    predictor = Predictor.from_run(run, device=device, tta=False)
    cfg = RunConfig.from_dict(predictor.checkpoint["config"], source=f"{run} checkpoint")
    cfg = cfg.with_overrides({"calibrate.objective": objective, "calibrate.alpha": alpha, "calibrate.folds": folds})
    if predictor.grade_names is None:
        raise ConfigError(f"{run} predicts a continuous target: thresholds and grade sets need graded data")
    imageset, split = _run_data(run, cfg)
    val_set = imageset.subset(split["val"])
    cal_set = imageset.subset(split["cal"]) if "cal" in split else None
    needed = min_calibration_size(cfg.calibrate.alpha)
    available = len(cal_set if cal_set is not None else val_set)
    if available < needed:  # checked first, so a refused request prints nothing else
        raise DataError(
            f"alpha {cfg.calibrate.alpha} needs at least {needed} validation images for grade sets with a coverage "
            f"guarantee, but {run} has {available}: raise --alpha or retrain with a larger validation split"
        )
    calibration = _calibrate_run(run, predictor, imageset, split, cfg.calibrate, strict=True)
    write_text(run / "config.yaml", dump_config(cfg))
    return calibration


def _calibrate_run(
    run: Path, predictor: Predictor, imageset: ImageSet, split: dict[str, np.ndarray], cfg, *, strict: bool, val_outputs: Outputs | None = None,
) -> dict:
    """Calibrate ``run`` twice, on plain outputs and on test-time augmented ones (``--tta``), so
    either way of grading has cut points and grade sets fitted to its own scores. Returns the plain one."""
    val_set = imageset.subset(split["val"])
    cal_set = imageset.subset(split["cal"]) if "cal" in split else None
    outputs = val_outputs if val_outputs is not None else predictor.outputs(val_set.images)
    calibration = _calibrate_and_save(run, predictor, val_set, outputs, cfg, strict=strict, cal_set=cal_set)
    augmented = predictor.with_tta()
    _calibrate_and_save(run, augmented, val_set, augmented.outputs(val_set.images), cfg, strict=strict, cal_set=cal_set)
    predictor.checkpoint[CALIBRATION_TTA] = augmented.checkpoint[CALIBRATION_TTA]
    return calibration


def _calibrate_and_save(
    run: Path, predictor: Predictor, val_set: ImageSet, outputs: Outputs, cfg, *, strict: bool, cal_set: ImageSet | None = None
) -> dict:
    """Choose cut points (tuned vs the head's own rule, by cross-validation) and fit conformal sets.

    The grade sets are calibrated on ``cal_set`` when the run held one out, else on ``val_set``.
    """
    num_grades = len(predictor.grade_names)
    y = val_set.targets.astype(np.int64)
    rule = "rounding" if predictor.model.task == "regression" else f"the {predictor.model.task} rule"
    choice = choose_thresholds(
        y, outputs.scores, num_grades, objective=cfg.objective, folds=cfg.folds, seed=0, baseline=outputs.native, baseline_name=rule
    )
    mode = "with test-time augmentation, " if predictor.tta else ""
    log(f"{mode}thresholds: {choice.reason}")
    calibration: dict[str, Any] = {"thresholds": choice.to_dict(), "conformal": None}
    if cal_set is not None:
        y, outputs = cal_set.targets.astype(np.int64), predictor.outputs(cal_set.images)
    where = "held-out calibration" if cal_set is not None else "validation"
    try:
        conformal = fit_conformal(y, scores=outputs.scores, probabilities=outputs.probabilities, alpha=cfg.alpha)
    except ImgradeError as e:
        if strict:
            raise
        log(f"warning: no grade sets: {e}")
    else:
        calibration["conformal"] = conformal.to_dict()
        sets = prediction_sets(conformal, scores=outputs.scores, probabilities=outputs.probabilities, num_grades=num_grades)
        summary = set_summary(sets, y, predictor.grade_names)
        log(
            f"{mode}grade sets: {conformal.kind}, alpha {cfg.alpha}: {where} coverage {summary['coverage']:.3f}, "
            f"mean size {summary['mean_size']:.2f} grades ({conformal.n} calibration images)"
        )
    key = CALIBRATION_TTA if predictor.tta else "calibration"
    best = find_run_checkpoint(run)
    payload = load_checkpoint(best)
    payload[key] = calibration
    save_checkpoint(best, payload)
    predictor.checkpoint[key] = calibration
    return calibration


def _run_data(run: Path, cfg: RunConfig) -> tuple[ImageSet, dict[str, np.ndarray]]:
    imageset = load_dataset(cfg.data)
    return imageset, load_split(run if run.is_dir() else run.parent, imageset)


# ----------------------------------------------------------------------------- evaluate


def evaluate(
    run: str | Path, *, data: str | None = None, out: str | Path | None = None, device: str = "auto", tta: bool | None = None
) -> dict[str, Any]:
    """Score the run's test split (or every image of ``data``); write predictions, metrics, plots, report.

    With ``tta`` every image is graded as the average of a few views of it. An ensemble's members
    are scored on the same images too, so the table shows what the ensemble adds.
    """
    run = Path(run)
    run_dir = run if run.is_dir() else run.parent
    predictor = Predictor.from_run(run, device=device, tta=tta)
    cfg = RunConfig.from_dict(predictor.checkpoint["config"], source=f"{run} checkpoint")
    if data is None:
        imageset, split = _run_data(run, cfg)
        imageset = imageset.subset(split["test"])
        name = "test"
    else:
        data_cfg = DataConfig(
            path=str(data), view=cfg.data.view, image_size=predictor.image_size,
            target_column=cfg.data.target_column, target=cfg.data.target,
        )
        imageset = load_dataset(data_cfg, grades=predictor.grade_names)
        name = Path(data).name.removesuffix(".tar.gz").removesuffix(".csv") or "data"
    if len(imageset) == 0:
        raise DataError(f"no images to evaluate in {data or cfg.data.path}: the test split is empty; pass --data")
    out_dir = Path(out) if out is not None else run_dir / f"eval-{name}{'-tta' if predictor.tta else ''}"
    log(f"evaluating {len(imageset)} images from {imageset.source} -> {out_dir}")

    outputs = predictor.outputs(imageset.images)
    y = imageset.targets
    grade_names = predictor.grade_names
    sets = None
    if grade_names is not None:
        y_int = y.astype(np.int64)
        predicted = predictor.grades(outputs)
        metrics = ordinal_metrics(y_int, outputs.scores, grade_names, y_pred=predicted)
        metrics["decisions"] = _decision_metrics(predictor, outputs, y_int)
        sets = predictor.sets(outputs)
        if sets is not None:
            metrics["grade_sets"] = {"alpha": predictor.conformal.alpha, "kind": predictor.conformal.kind, **set_summary(sets, y_int, grade_names)}
    else:
        predicted = None
        metrics = continuous_metrics(y, outputs.scores)
    metrics = {"data": imageset.source, "split": name, "task": predictor.model.task, **metrics}
    if predictor.members > 1 and grade_names is not None:
        metrics["members"] = _member_metrics(run_dir, predictor, imageset, device, predictor.tta)
    if data is not None and grade_names is not None:
        gap = _domain_gap(run, predictor, cfg, Path(data), metrics)
        if gap is not None:
            metrics["domain_gap"] = gap

    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.csv", imageset, outputs.scores, predicted, sets, grade_names)
    title = f"{run_dir.name}: {name} ({len(imageset)} images)"
    pictures = evaluation_plots(
        out_dir, read_history(run_dir / "history.csv"), y, outputs.scores, grade_names, metrics, predictor.thresholds, title, run_dir.name,
        frozen_epochs=cfg.train.freeze_backbone_epochs,
    )
    metrics["files"] = {"predictions": str(out_dir / "predictions.csv"), "metrics": str(out_dir / "metrics.json"),
                        "report": str(out_dir / "report.html"), **{k: str(v) for k, v in pictures.items()}}
    save_json(out_dir / "metrics.json", metrics)
    write_run_report(out_dir / "report.html", title, metrics, grade_names, pictures, cfg, run_dir, predictor.thresholds)
    print(format_metrics_table(metrics, grade_names))
    if metrics.get("members"):
        print(format_members_table(metrics))
    log("wrote " + ", ".join(str(p) for p in [out_dir / "predictions.csv", out_dir / "metrics.json", out_dir / "report.html", *pictures.values()]))
    return metrics


def _domain_gap(run: Path, predictor: Predictor, cfg: RunConfig, data: Path, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The run's metrics on its own test split next to those on ``data`` (synthetic vs real: the sim-to-real gap).

    None when ``data`` is the run's own data, or that data can no longer be read.
    """
    from imgrade.fewshot import METRICS, score

    if cfg.data.path is None or Path(cfg.data.path).resolve() == data.resolve():
        return None
    try:
        own, split = _run_data(run, cfg)
    except ImgradeError as e:
        log(f"no domain gap: the run's own data cannot be read ({e})")
        return None
    test = own.subset(split["test"])
    if len(test) == 0:
        return None
    own_metrics = score(predictor, test)[0]
    used = metrics["decisions"][metrics["decisions"]["used"]] if metrics.get("decisions") else metrics
    this = {"n": metrics["n"], **{k: used[k] for k in METRICS}}
    return {
        "own": {"data": own.source, **own_metrics},
        "this": {"data": metrics["data"], **this},
        "gap": {k: None if own_metrics[k] is None or this[k] is None else this[k] - own_metrics[k] for k in METRICS},
    }


def _member_metrics(run_dir: Path, predictor: Predictor, imageset: ImageSet, device: str, tta: bool) -> list[dict[str, Any]]:
    """Each member of an ensemble graded alone (its own calibration) on the same images."""
    y = imageset.targets.astype(np.int64)
    rows = []
    for i in range(predictor.members):
        try:
            member = Predictor.from_run(member_dir(run_dir, i), device=device, tta=tta)
        except ImgradeError as e:
            log(f"member {i} left out of the table: {e}")
            continue
        outputs = member.outputs(imageset.images)
        m = ordinal_metrics(y, outputs.scores, member.grade_names, y_pred=member.grades(outputs))
        seed = member.checkpoint["config"]["train"]["seed"]
        rows.append({"member": f"m{i}", "seed": seed, **{k: m[k] for k in ("accuracy", "within1", "grade_mae", "qwk")}})
    return rows


def _decision_metrics(predictor: Predictor, outputs: Outputs, y: np.ndarray) -> dict[str, Any]:
    """Headline metrics for each way of turning scores into grades, so the gain of tuning shows."""
    names = predictor.grade_names
    rule = "rounding" if predictor.model.task == "regression" else f"{predictor.model.task} rule"
    decisions = {rule: outputs.native}
    choice = predictor.thresholds
    if choice and choice.get("kind") == "tuned":
        decisions["tuned thresholds"] = apply_thresholds(outputs.scores, np.asarray(choice["thresholds"]))
    keys = ("accuracy", "within1", "grade_mae", "qwk")
    result = {}
    for label, pred in decisions.items():
        m = ordinal_metrics(y, outputs.scores, names, y_pred=pred)
        result[label] = {k: m[k] for k in keys}
    result["used"] = "tuned thresholds" if len(decisions) > 1 else rule
    return result


# ----------------------------------------------------------------------------- predict


def export(run: str | Path, *, out: str | Path, fmt: str = "onnx", tta: bool | None = None) -> dict[str, Any]:
    """Write ``run`` as one self-contained grader file (ONNX); prints what was written.

    An ensemble becomes one graph holding every member; ``tta`` puts the test-time views in the graph.
    """
    from imgrade.runtime.export import export_onnx

    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r} is not supported: use onnx")
    summary = export_onnx(run, out, tta=tta)
    print(
        f"wrote {summary['path']} ({summary['bytes'] / 1e6:.1f} MB; outputs {', '.join(summary['outputs'])}); "
        f"ONNX Runtime matches PyTorch within {summary['max_score_diff']:.1e}\n"
        f"grade with it: imgrade predict {summary['path']} IMAGES  |  imgrade serve {summary['path']}"
    )
    return summary


# ----------------------------------------------------------------------------- compare


def compare(
    cfg: RunConfig, out: str | Path, *, tasks: str | list[str] | None = None, recipes: str | list[str] | None = None,
    seeds: int = 3, folds: int = 0, metric: str = "qwk",
) -> dict[str, Any]:
    """Train every recipe on the same split(s) and budget; write tables, box plots and a report.

    ``recipes`` (``"regression,corn+ema=0.999+tta"``, see :mod:`imgrade.recipe`) or ``tasks`` (plain
    task names); neither: the four tasks. ``metric`` (qwk, accuracy, mae or both) is what the
    recommendation optimises.
    """
    from imgrade.compare import parse_tasks, run_comparison

    if cfg.data.path is None:
        raise ConfigError("no data given: pass --data PATH")
    if tasks is not None and recipes is not None:
        raise ConfigError("give --recipes or --tasks, not both: every task is a recipe")
    if recipes is not None:
        recipe_list = parse_recipes(recipes if isinstance(recipes, str) else ",".join(recipes))
    else:
        tasks = "regression,classification,coral,corn" if tasks is None else tasks
        recipe_list = parse_tasks(tasks if isinstance(tasks, str) else ",".join(tasks))
    return run_comparison(cfg, out, recipes=recipe_list, seeds=seeds, folds=folds, metric=metric)


def fewshot(cfg: RunConfig, out: str | Path, *, synthetic_n: int = 20000, pretrain_epochs: int = 15, randomize: float = 1.0) -> dict[str, Any]:
    """Pretrain on synthetic cucumbers, fine-tune on ``cfg.data.path``'s photos; metrics of every stage."""
    from imgrade.fewshot import run_fewshot

    return run_fewshot(cfg, out, synthetic_n=synthetic_n, pretrain_epochs=pretrain_epochs, randomize=randomize)


# ----------------------------------------------------------------------------- data


def data_info(path: str, *, grades: list[str] | None = None, view: str = "above", image_size: int | None = None) -> dict[str, Any]:
    """Describe a data set: format detected, images per grade, image size, what was dropped."""
    kind = detect_format(path)
    native = image_size or 32
    imageset = load_dataset(DataConfig(path=path, grades=grades, view=view, image_size=native))
    info = _data_summary(imageset)
    info["format"] = kind
    lines = [f"format:     {kind} ({imageset.source})", f"images:     {len(imageset)}"]
    if kind == "cucumber9":
        lines.append(f"image size: {imageset.image_size[0]}x{imageset.image_size[1]} RGB")
    else:
        lines.append(f"image size: read and resized to {native}x{native} RGB (--image-size)")
    if imageset.split is not None:
        own = {name: int((imageset.split == name).sum()) for name in ("train", "val", "test")}
        lines.append("own split:  " + ", ".join(f"{k} {v}" for k, v in own.items() if v))
    if imageset.is_ordinal:
        counts = imageset.counts()
        width = max(len(g) for g in counts)
        lines.append("per grade:")
        lines += [f"  {g:<{width}}  {c:>6}" for g, c in counts.items()]
    else:
        t = info["target"]
        lines.append(f"target:     continuous, min {t['min']:.4g}, mean {t['mean']:.4g}, max {t['max']:.4g}")
    dropped = ", ".join(f"{k} {v}" for k, v in imageset.dropped.items()) or "nothing"
    lines.append(f"dropped:    {dropped}")
    print("\n".join(lines))
    return info


def data_download(dataset: str, *, prototype: int = 1, dest: str = "data", base_url: str | None = None) -> Path:
    """Download a public data set archive into ``dest``; returns the archive path."""
    from imgrade.data.download import download_cucumber9

    if dataset != "cucumber9":
        raise ConfigError(f"unknown data set {dataset!r}: the downloadable set is cucumber9")
    path = download_cucumber9(prototype, dest, base_url=base_url)
    log(f"saved {path}; train with: imgrade train --data {path} --out runs/cucumber9-p{prototype}")
    return path


def data_synth(
    out: str | Path,
    *,
    n: int = 2000,
    fmt: str = "cucumber9",
    image_size: int = 32,
    seed: int = 0,
    label_noise: float = 0.0,
    randomize: float = 0.0,
) -> Path:
    """Generate synthetic cucumbers into ``out`` as CUCUMBER-9 batches or class folders.

    ``randomize`` (0..1) is the domain randomisation strength: 0 the plain photos, 1 the most
    varied lighting, background, framing, edges and camera effects (geometry and grades unchanged).
    """
    from imgrade.data.cucumber9_writer import write_cucumber9
    from imgrade.data.synthetic import generate_cucumbers, write_folders

    if n < 10:
        raise ConfigError(f"--n {n} is too small to train on: generate at least 10 images")
    if not 0 <= label_noise < 1:
        raise ConfigError(f"--label-noise {label_noise} must be in [0, 1)")
    if fmt not in ("cucumber9", "folders"):
        raise ConfigError(f"--format {fmt!r} is not cucumber9 or folders")
    if not 0 <= randomize <= 1:
        raise ConfigError(f"--randomize {randomize} must be in [0, 1] (0 plain photos, 1 the most varied)")
    synthetic = generate_cucumbers(n, image_size=image_size, seed=seed, label_noise=label_noise, randomize=randomize)
    out = Path(out)
    if fmt == "folders":
        write_folders(synthetic, out)
    else:
        s = synthetic.imageset
        write_cucumber9(out, s.images, s.targets.astype(np.int64), list(s.grade_names), num_batches=5, test_fraction=1 / 6)
        _write_attributes(out / "attributes.csv", synthetic)
    randomized = f", randomize {randomize:g}" if randomize else ""
    log(f"wrote {n} synthetic cucumbers ({fmt}, {image_size}x{image_size}{randomized}) to {out}")
    return out


def _write_attributes(path: Path, synthetic) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = list(synthetic.attributes)
    writer.writerow(["id", "grade", *names])
    s = synthetic.imageset
    for i, image_id in enumerate(s.ids):
        writer.writerow([image_id, s.grade_names[int(s.targets[i])], *(f"{synthetic.attributes[k][i]:.4f}" for k in names)])
    write_text(path, buffer.getvalue())


# ----------------------------------------------------------------------------- model


def model_summary(
    *, depth: int = 29, image_size: int = 32, task: str = "regression", head: str = "auto", num_grades: int = 9,
    backbone: str = "reference",
) -> str:
    """The layer table of the network with output shapes and parameter counts."""
    from imgrade.models.summary import summarize

    RunConfig.from_dict({"model": {"depth": depth, "task": task, "head": head, "backbone": backbone}})  # validates with the flag names
    grade_axes = None
    if task == "axes" and num_grades == len(CUCUMBER9_GRADES):  # the built-in table: size and shape
        grade_axes = parse_grade_axes(CUCUMBER9_TABLE, list(CUCUMBER9_GRADES))
    model = build_model(depth=depth, task=task, head=head, num_grades=num_grades, grade_axes=grade_axes, backbone=backbone, image_size=image_size)
    table = summarize(model, input_size=(3, image_size, image_size))
    print(table)
    return table


# ----------------------------------------------------------------------------- demo


def demo(*, out: str | Path = "demo-run", n: int = 2500, epochs: int = 30, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """The whole pipeline on built-in synthetic cucumbers: generate, train, evaluate."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} already exists and is not empty: pass --overwrite or choose another --out")
        shutil.rmtree(out)
    t0 = time.perf_counter()
    data_dir = data_synth(out / "data", n=n, seed=seed)
    data_info(str(data_dir))
    cfg = RunConfig.from_dict({"data": {"path": str(data_dir)}, "train": {"epochs": epochs, "seed": seed}})
    train(cfg, out / "run")
    metrics = evaluate(out / "run")
    files = metrics["files"]
    log(
        f"\ndemo finished in {time.perf_counter() - t0:.0f}s. Look at:\n"
        f"  {files['report']}\n      everything below in one page: open it in a browser\n"
        f"  {files['scatter']}\n      predicted score vs true grade: points should hug the diagonal\n"
        f"  {files['violin']}\n      error per grade: violins centred on 0 and inside the dashed +-0.5 band are graded right\n"
        f"  {files['confusion']}\n      which grades are mistaken for which (rows: true grade)\n"
        f"  {files['loss']}\n      training vs validation loss: both should fall; a widening gap is overfitting\n"
        f"Next: imgrade train --data YOUR_DATA --out runs/mine   (see README.md)"
    )
    return metrics
