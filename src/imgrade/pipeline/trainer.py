"""``imgrade train``: how a run is trained, top to bottom.

:func:`train` checks the run folder (fresh, --resume or --overwrite), then :func:`_train_network`
does one network in named steps: set up torch, read the data, choose the split, build the model,
write the run's first files, fit, then check and calibrate what was trained. ``--ensemble K``
repeats that for K members (:func:`_train_ensemble`) and grades with their average.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from imgrade.config import RunConfig, dump_config
from imgrade.core.checkpoint import save_json
from imgrade.core.device import resolve_device, seed_everything, set_determinism
from imgrade.core.errors import ConfigError
from imgrade.core.io import write_text
from imgrade.core.perf import precision_name, resolve_amp
from imgrade.core.preprocess import mean_image, nhwc_to_tensor
from imgrade.core.registry import head_entry, head_settings
from imgrade.core.rundir import member_dir, read_history, run_lock, save_split, write_history
from imgrade.core.threads import auto_threads
from imgrade.core.version import __version__
from imgrade.data.imageset import ImageSet
from imgrade.data.loader import load_dataset
from imgrade.data.unlabeled import PhotoPool
from imgrade.evaluation import plots
from imgrade.evaluation.outputs import run_label
from imgrade.models.backbones import describe
from imgrade.models.factory import build_model, head_class
from imgrade.models.heads import balanced_class_weights
from imgrade.pipeline.calibrator import calibrate_run
from imgrade.pipeline.evaluator import refresh_model_card
from imgrade.pipeline.health import check_and_calibrate
from imgrade.pipeline.members import (
    assemble_ensemble,
    mean_history,
    member_seed,
    member_state,
    member_tracking,
    run_state,
)
from imgrade.pipeline.runs import choose_split, data_summary, prepare_out, recorded_compile, started_training
from imgrade.pipeline.teacher import (
    TEACHER_RUN,
    TeacherValues,
    read_unlabeled,
    self_taught,
    teacher_config,
    teacher_values,
)
from imgrade.runtime.run import RunFolder
from imgrade.runtime.run_checkpoint import Checkpoint
from imgrade.training import distributed, tracking
from imgrade.training.compile_probe import compile_model, resolve_compile
from imgrade.training.loop import FitData, data_device, fit
from imgrade.training.warm_start import load_init, plan_init

logger = logging.getLogger(__name__)

LOSS_PLOT_EVERY_S = 10.0
"""loss_curve.png is redrawn at most this often during training (history.csv after every epoch)."""

Split = dict[str, np.ndarray]


def train(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    split: Split | None = None,
    imageset: ImageSet | None = None,
) -> list[dict]:
    """Train a model on ``cfg.data.path`` into the run folder ``out``; returns the epoch history.

    ``split`` (train/val/test indexes) and ``imageset`` (the loaded data) let ``compare`` give
    every formulation the same images without reading them again.

    Under torchrun every process calls this; rank 0 alone reads and writes ``out`` and the others
    receive what they need from it (see training/distributed.py).
    """
    with distributed.process_group():
        return _train(cfg, Path(out), resume, overwrite, split, imageset)


def _train(
    cfg: RunConfig,
    out: Path,
    resume: bool,
    overwrite: bool,
    split: Split | None,
    imageset: ImageSet | None,
    card: bool = True,
) -> list[dict]:
    with contextlib.ExitStack() as lock:

        def prepare():
            lock.enter_context(run_lock(out))  # held by rank 0 until training, calibration and reports are done
            run_cfg, resume_state = prepare_out(cfg, out, resume, overwrite)
            tracking.check_installed(run_cfg.train.log_to)  # a missing extra fails before the data is read
            return speed_settings(run_cfg, resuming=resume_state is not None), resume_state

        cfg, resume_state = distributed.on_main(prepare)
        if self_taught(cfg):
            return _train_taught(cfg, out, resume, split, imageset)
        if cfg.train.ensemble > 1:
            return _train_ensemble(cfg, out, resume, split, imageset)
        return _train_network(cfg, out, resume_state, split, imageset, card=card)


def _train_network(
    cfg: RunConfig,
    out: Path,
    resume_state: dict | None,
    split: Split | None,
    imageset: ImageSet | None,
    card: bool = True,
) -> list[dict]:
    """One network: the steps in the order they run (the order matters for a seeded run's weights)."""
    device = _set_up_torch(cfg)
    imageset = _read_data(cfg, imageset)
    head_state, cfg = _head_state(cfg, imageset, resume_state)
    split = distributed.on_main(choose_split, cfg, out, imageset, resume_state is not None, split)
    _log_split(split)
    pool = distributed.on_main(read_unlabeled, cfg, imageset)
    taught = distributed.on_main(teacher_values, cfg, out, imageset, split["train"], pool, resume_state is not None)
    data = _fit_data(imageset, split, device, pool, taught)
    model = _build_model(cfg, imageset, split, head_state, resume_state).to(device)
    compiling = distributed.on_main(
        resolve_compile, cfg.train, model, data, device, distributed.world_size(), resume_state is not None
    )  # rank 0 alone probes, and sends its choice
    cfg = cfg.with_overrides({"train.compile": compiling.compile})
    if distributed.is_main() and resume_state is None:
        # written only now, so a refused --init (other grades, another depth) leaves nothing in --out,
        # and config.yaml records what --compile auto chose
        _write_run_start(out, cfg, imageset, split)
    if cfg.train.compile == "on":
        compile_model(model)
    meta = _checkpoint_meta(cfg, imageset, data.mean.cpu(), model.head.state())

    t0 = time.perf_counter()
    world = distributed.world_size()
    where = f"{device}" if world == 1 else f"{world} processes ({device.type}, DDP)"
    if device.type == "cpu":
        where += f", {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"
    where += f", {precision_name(cfg.train.amp, device)}, {'compiled' if cfg.train.compile == 'on' else 'eager'}"
    logger.info(
        f"training {cfg.model.task} {describe(cfg.model.backbone, cfg.model.depth)} on {where} for {cfg.train.epochs} epochs -> {out}"
        + (f"; {compiling.why}" if compiling.why else "")
    )
    done = list(resume_state.training.history) if resume_state is not None else []
    main = distributed.is_main()  # rank 0 alone logs to TensorBoard and MLflow
    with tracking.open_trackers(cfg, out, done) if main else tracking.Trackers([]) as trackers:
        on_epoch_end = _epoch_writer(cfg, out, trackers)
        history = fit(model, data, cfg.train, device, out, meta, resume=resume_state, on_epoch_end=on_epoch_end)
        if not main:
            return history  # rank 0 alone checks, calibrates and reports on the files it wrote
        best = min(history, key=lambda r: r["val_loss"])
        logger.info(
            f"done in {time.perf_counter() - t0:.0f}s: best val_loss {best['val_loss']:.4f} (val_mae {best['val_mae']:.3f}) "
            f"at epoch {best['epoch']}"
        )
        check_and_calibrate(cfg, out, imageset, split, card)
        trackers.log_end(out, history)
    return history


def speed_settings(cfg: RunConfig, resuming: bool = False) -> RunConfig:
    """``cfg`` with the thread count and precision this machine gets now, as the run records them.

    ``train.threads`` 0 becomes the count :func:`imgrade.core.threads.auto_threads` chooses (the
    usable cores less those other work keeps busy) and ``train.amp`` auto becomes bf16 or off
    (:func:`imgrade.core.perf.resolve_amp`). Both go into the run's config.yaml, so ``--resume``
    computes as the run began: the thread count and the precision change a seeded run's weights.
    A resumed run whose config predates this keeps torch's default threads (0).
    """
    changes: dict[str, object] = {}
    if not cfg.train.threads and not resuming:
        choice = auto_threads()
        changes["train.threads"] = choice.threads
        logger.debug(f"threads: {choice.threads} ({choice.reason}; --threads N to choose)")
    amp = resolve_amp(cfg.train.amp, resolve_device(cfg.train.device), resuming)
    if amp != cfg.train.amp:
        changes["train.amp"] = amp
    return cfg.with_overrides(changes) if changes else cfg


def _set_up_torch(cfg: RunConfig) -> torch.device:
    """Threads, seeds and determinism, then this process's device."""
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
    torch.backends.cudnn.benchmark = (
        not cfg.train.deterministic
    )  # the image size is fixed: time cuDNN's algorithms once
    return distributed.process_device(resolve_device(cfg.train.device))


def _read_data(cfg: RunConfig, imageset: ImageSet | None) -> ImageSet:
    """The image set (read unless given), checked against what the task needs."""
    imageset = imageset if imageset is not None else load_dataset(cfg.data)
    logger.info(f"data: {imageset.source}: {len(imageset)} images, {imageset.image_size[0]}x{imageset.image_size[1]}")
    if head_entry(cfg.model.task).needs_grades and not imageset.is_ordinal:
        raise ConfigError(
            f"task {cfg.model.task} needs integer grades, but {cfg.data.path} has a continuous target: use --task regression"
        )
    return imageset


def _head_state(cfg: RunConfig, imageset: ImageSet, resume_state: Checkpoint | None) -> tuple[dict, RunConfig]:
    """The head's own state (``Head.initial_state``: the axes head's grade table), and the config
    with the settings the head found (the table's file) recorded.

    On --resume the state comes from last.pt: a file it was read from may have changed or moved since.
    """
    for name, value in cfg.model.settings.items():
        owner = head_settings()[name]
        if owner.name != cfg.model.task and value != getattr(owner.make_settings({}), name):
            flag = "--" + name.replace("_", "-")
            logger.info(f"note: {flag} {value} is read only with --task {owner.name}; task {cfg.model.task} ignores it")
    if resume_state is not None:
        return resume_state.head_state, cfg
    settings = head_entry(cfg.model.task).make_settings(cfg.model.head_settings())
    state, found = head_class(cfg.model.task).initial_state(settings, cfg.data.path, imageset.grade_names)
    if found:  # config.yaml then says which file (also one found beside the data)
        cfg = cfg.with_overrides({f"model.{name}": value for name, value in found.items()})
    return state, cfg


def _log_split(split: Split) -> None:
    sizes = {name: len(index) for name, index in split.items()}
    held = f", {sizes['cal']} held out for grade sets" if "cal" in sizes else ""
    logger.info(f"split: {sizes['train']} train, {sizes['val']} val, {sizes['test']} test{held}")


def _fit_data(
    imageset: ImageSet,
    split: Split,
    device: torch.device,
    pool: PhotoPool | None = None,
    taught: TeacherValues | None = None,
) -> FitData:
    """The images as one uint8 tensor, the targets, the split's indexes and the training mean image;
    the unlabelled photos (``pool``) as more training rows after the set's, with NaN targets, and
    the teacher's values (``taught``) for every row."""
    # a view, not a copy: a memory-mapped set is read a batch at a time, so it may exceed memory
    x = nhwc_to_tensor(np.asarray(imageset.images))  # (N, 3, H, W) uint8
    y = torch.from_numpy(imageset.targets.astype(np.float32))
    train_idx, val_idx = torch.from_numpy(split["train"]), torch.from_numpy(split["val"])
    mean = mean_image(x, train_idx)  # (3, H, W): the reference's per-pixel mean, of the labelled photos
    if pool is not None:  # one copy of the set, with the unlabelled photos after it
        n, m = len(imageset), len(pool)
        x = torch.cat([x, nhwc_to_tensor(np.asarray(pool.images))])  # (N + M, 3, H, W) uint8
        y = torch.cat([y, torch.full((m,), float("nan"))])
        train_idx = torch.cat([train_idx, torch.arange(n, n + m)])
    teacher = torch.from_numpy(taught.values) if taught is not None else None  # (N + M, T)
    keep = data_device(x, device)
    return FitData.from_set(
        x.to(keep), y.to(keep), train_idx, val_idx, mean.to(keep), teacher.to(keep) if teacher is not None else None
    )


def _build_model(
    cfg: RunConfig, imageset: ImageSet, split: Split, head_state: dict, resume_state: Checkpoint | None
) -> torch.nn.Module:
    """The network for ``cfg``: class weights, the head's starting bias from the training grades, and
    the weights of ``--pretrained`` or ``--init`` (on --resume, last.pt holds all the weights instead)."""
    fresh = resume_state is None
    num_grades = len(imageset.grade_names) if imageset.is_ordinal else None
    class_weights = None
    if cfg.train.class_weight == "balanced":
        if num_grades is None:
            raise ConfigError("--class-weight balanced needs graded data, but this target is continuous: drop the flag")
        class_weights = torch.as_tensor(
            balanced_class_weights(imageset.targets[split["train"]].astype(np.int64), num_grades), dtype=torch.float32
        )
    model = build_model(
        cfg.model.depth,
        cfg.model.task,
        cfg.model.head,
        num_grades,
        class_weights,
        **cfg.model.head_settings(),
        state=head_state,
        backbone=cfg.model.backbone,
        image_size=cfg.data.image_size,
        pretrained=cfg.model.pretrained if fresh else None,
    )
    if cfg.model.pretrained and fresh:
        logger.info(
            f"backbone: {describe(cfg.model.backbone, cfg.model.depth)} with the weights of {cfg.model.pretrained}"
        )
    if num_grades is not None:
        model.head.init_from_targets(imageset.targets[split["train"]])
    if cfg.train.init and fresh:
        # after init_from_targets, so a loaded head's weights win; every rank reads the same file
        logger.info(load_init(model, plan_init(cfg.train.init, cfg.model, imageset.grade_names, head_state)))
    return model


def _write_run_start(out: Path, cfg: RunConfig, imageset: ImageSet, split: Split) -> None:
    """config.yaml, split.json and data.json: what the run is, written before its first epoch."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_config(cfg))
    save_split(out / "split.json", split, imageset)
    save_json(out / "data.json", data_summary(imageset))


def _checkpoint_meta(cfg: RunConfig, imageset: ImageSet, mean: torch.Tensor, head_state: dict) -> Checkpoint:
    """What every checkpoint carries beside the weights, so a run is graded from best.pt alone
    (the head is rebuilt from its state, never from a file it was read from)."""
    return Checkpoint(
        config=cfg,
        grade_names=imageset.grade_names,
        image_size=cfg.data.image_size,
        mean_image=mean,
        model_state={},
        head_state=head_state,
        version=__version__,
        data_source=imageset.source,
    )


def _epoch_writer(cfg: RunConfig, out: Path, trackers: tracking.Trackers):
    """After each epoch: history.csv and the trackers, and loss_curve.png at most every
    ``LOSS_PLOT_EVERY_S`` seconds."""
    last_plot = -float("inf")

    def on_epoch_end(history: list[dict]) -> None:
        nonlocal last_plot
        write_history(out / "history.csv", history)
        trackers.log_epoch(history[-1])
        # a figure takes ~0.5 s, half an epoch of a few hundred photos: always drawn after the first
        # and the last epoch, in between at most every LOSS_PLOT_EVERY_S seconds
        now = time.monotonic()
        if now - last_plot >= LOSS_PLOT_EVERY_S or len(history) == cfg.train.epochs:
            plots.plot_loss_curve(
                history,
                out / "loss_curve.png",
                title=f"loss: {run_label(out)}",
                frozen_epochs=cfg.train.freeze_backbone_epochs,
            )
            trackers.log_image(out / "loss_curve.png", history[-1]["epoch"])
            last_plot = now

    return on_epoch_end


def _train_taught(
    cfg: RunConfig, out: Path, resume: bool, split: Split | None, imageset: ImageSet | None
) -> list[dict]:
    """``--unlabeled`` or ``--distill`` without ``--teacher``: the run's recipe is trained first on
    the labelled photos alone, into ``out/teacher`` (a complete run, resumed as one), then the run
    itself learns from it on the same split: as one network with --distill, else as the recipe says.

    config.yaml then names the teacher (``train.teacher``), so a resumed run goes on as the student."""
    imageset = imageset if imageset is not None else load_dataset(cfg.data)
    distributed.on_main(read_unlabeled, cfg, imageset)  # decoded (into the cache) and checked before the teacher trains
    have_split = resume and (out / "split.json").is_file()
    split = distributed.on_main(choose_split, cfg, out, imageset, have_split, split)
    if distributed.is_main() and not have_split:
        _write_run_start(out, cfg, imageset, split)
    teacher = out / TEACHER_RUN
    state = distributed.on_main(run_state, teacher)
    recipe = f"an ensemble of {cfg.train.ensemble}" if cfg.train.ensemble > 1 else "one network"
    logger.info(
        f"\nteacher: {cfg.model.task}, {recipe}, on the labelled photos -> {teacher}"
        + {"done": ": already trained", "resume": ": resuming"}.get(state, "")
    )
    if state != "done":
        _train(teacher_config(cfg), teacher, state == "resume", False, split, imageset)
    student = cfg.with_overrides(
        {"train.teacher": str(teacher.resolve()), **({"train.ensemble": 1} if cfg.train.distill else {})}
    )
    what = "one network" if student.train.ensemble == 1 else f"an ensemble of {student.train.ensemble}"
    logger.info(f"\nstudent: {what} taught by {teacher} -> {out}")
    if distributed.is_main():
        write_text(out / "config.yaml", dump_config(student))
    if student.train.ensemble > 1:
        return _train_ensemble(student, out, True, split, imageset)
    resume_state = distributed.on_main(started_training, out)
    return _train_network(student, out, resume_state, split, imageset)


def _train_ensemble(
    cfg: RunConfig, out: Path, resume: bool, split: Split | None, imageset: ImageSet | None
) -> list[dict]:
    """Train ``cfg.train.ensemble`` members on one split, each a complete run in ``out/members/mI``
    (so resume and crash safety hold per member), then write ``out/best.pt`` holding them all and
    calibrate the ensemble on its own validation outputs. Returns the members' mean history."""
    k = cfg.train.ensemble
    imageset = imageset if imageset is not None else load_dataset(cfg.data)
    logger.info(f"data: {imageset.source}: {len(imageset)} images, {imageset.image_size[0]}x{imageset.image_size[1]}")
    have_split = resume and (out / "split.json").is_file()
    split = distributed.on_main(choose_split, cfg, out, imageset, have_split, split)
    if distributed.is_main() and not have_split:
        _write_run_start(out, cfg, imageset, split)
    histories = []
    for i in range(k):
        seed = member_seed(cfg.train.seed, k, i)
        member = member_dir(out, i)
        member_cfg = cfg.with_overrides({"train.ensemble": 1, "train.seed": seed, **member_tracking(cfg, out)})
        state = distributed.on_main(member_state, member)
        logger.info(
            f"\nensemble member {i + 1}/{k} (seed {seed}) -> {member}"
            + {"done": ": already trained", "resume": ": resuming"}.get(state, "")
        )
        if state == "done":
            histories.append(read_history(member / "history.csv"))
        else:
            histories.append(_train(member_cfg, member, state == "resume", False, split, imageset, card=False))
        if cfg.train.compile == "auto":  # the first member chose: the others, resumed or not, do the same
            cfg = cfg.with_overrides({"train.compile": distributed.on_main(recorded_compile, member)})
            if distributed.is_main():
                write_text(out / "config.yaml", dump_config(cfg))
    history = mean_history(histories)
    if not distributed.is_main():
        return history
    assemble_ensemble(cfg, out, k)
    write_history(out / "history.csv", history)
    plots.plot_loss_curve(
        history,
        out / "loss_curve.png",
        title=f"loss: {run_label(out)} (mean of {k} members)",
        frozen_epochs=cfg.train.freeze_backbone_epochs,
    )
    folder = RunFolder.open(out)
    predictor = folder.grader(device=cfg.train.device, tta=False)
    if imageset.is_ordinal:
        calibrate_run(folder, predictor, imageset, split, cfg.calibrate, strict=False)
    refresh_model_card(out, predictor.with_tta() if cfg.calibrate.tta else predictor, cfg, imageset, split)
    logger.info(f"ensemble of {k} members -> {out / 'best.pt'}")
    return history
