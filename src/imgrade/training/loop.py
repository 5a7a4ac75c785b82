"""The training loop: shuffle, augment, forward, loss, backward, step; validate; checkpoint.

The images are one uint8 tensor (N, 3, H, W): in memory, on the GPU, or a view of a
memory-mapped cache file. Each batch is gathered from it by index, then augmented and
normalised as tensors, so there is no DataLoader, no per-image Python, and nothing of size N
is copied.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from imgrade.config import TrainConfig
from imgrade.core.checkpoint import BEST, LAST
from imgrade.core.errors import CheckpointError
from imgrade.core.perf import autocast, autocast_dtype, to_device_async
from imgrade.core.preprocess import to_input
from imgrade.data.augment import photometric, random_shift_flip
from imgrade.runtime.run_checkpoint import Checkpoint, TrainingState
from imgrade.training import distributed
from imgrade.training.distributed import sum_over_ranks
from imgrade.training.ema import ModelEma
from imgrade.training.optim import build_optimizer, lr_factor, set_lr
from imgrade.training.teaching import taught_loss

logger = logging.getLogger(__name__)

GPU_SHARE = 0.25
"""A set goes to the GPU when it takes at most this share of the GPU's free memory (see ``data_device``)."""


@dataclass
class FitData:
    """Tensors for one run: images stay uint8 until a batch is taken.

    ``imgrade.pipeline.trainer`` gives the whole set once (``FitData.from_set``): ``train_x`` and ``val_x``
    are then one tensor, and ``train_index`` and ``val_index`` name each split's rows in it.
    Without an index a split is all of its tensor's rows.
    """

    train_x: torch.Tensor  # (N, 3, H, W) uint8
    train_y: torch.Tensor  # (N,) float32
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: torch.Tensor  # (3, H, W) float32 in [0, 1]: the training set's per-pixel mean
    train_index: torch.Tensor | None = None  # (N_train,) int64 rows of train_x
    val_index: torch.Tensor | None = None  # (N_val,) int64 rows of val_x
    teacher: torch.Tensor | None = None
    """(N, T) float32, a teacher's values for each row of ``train_x`` (training/teaching.py); None
    untaught. A taught set's unlabelled rows have NaN in ``train_y``."""

    def __post_init__(self) -> None:
        if self.train_index is None:
            self.train_index = torch.arange(len(self.train_x))
        if self.val_index is None:
            self.val_index = torch.arange(len(self.val_x))

    @classmethod
    def from_set(
        cls,
        images: torch.Tensor,
        targets: torch.Tensor,
        train_index: torch.Tensor,
        val_index: torch.Tensor,
        mean: torch.Tensor,
        teacher: torch.Tensor | None = None,
    ) -> FitData:
        """Both splits as rows of one set of images and targets, which are not copied."""
        return cls(images, targets, images, targets, mean, train_index, val_index, teacher)


def data_device(images: torch.Tensor, device: torch.device) -> torch.device:
    """Where the training images live: on ``device`` when it is a GPU they fit on, else on the host.

    On a GPU each step then gathers and augments its batch there, with no copy from the host: a
    CUCUMBER-9-sized set is a few MB of uint8. A set taking more than ``GPU_SHARE`` of the GPU's
    free memory (a large memory-mapped one, say) stays on the host, and each step copies its batch.
    """
    if device.type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(device)
    return device if images.numel() * images.element_size() <= GPU_SHARE * free else torch.device("cpu")


def take(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``images[rows]`` (B, 3, H, W); on the host read in ascending row order, returned in the order of ``rows``.

    A host tensor may be a view of a memory-mapped file: rows read in file order touch each page
    once, in the order the kernel reads ahead. The values are ``images[rows]``'s exactly.

    >>> images = torch.arange(5).reshape(5, 1, 1, 1)
    >>> take(images, torch.tensor([3, 0, 4])).flatten().tolist()
    [3, 0, 4]
    """
    if images.device.type != "cpu" or len(rows) < 2:
        return images[rows]
    ascending, order = rows.sort()
    return images[ascending][order.argsort()]


@torch.no_grad()
def validate(model, x, y, index, mean, device, batch_size: int = 256) -> tuple[float, float]:
    """(mean loss, mean absolute error of the decoded score) over the rows ``index`` of ``x``, ``y``.

    In fp32 even when training autocasts (``--amp``): as ``predict`` will run the model.
    """
    model.eval()
    mean = mean.to(device)  # once, not per batch (the set, and with it the mean, may stay on the host)
    total_loss, total_abs, n = 0.0, 0.0, len(index)
    for i in range(0, n, batch_size):
        rows = to_device_async(index[i : i + batch_size], x.device)
        target = y[rows].to(device)
        outputs = model(to_input(take(x, rows), mean, device))
        total_loss += float(model.loss(outputs, target)) * len(target)
        total_abs += float((model.decode(outputs).float() - target).abs().sum())
    return total_loss / n, total_abs / n


def validate_sharded(
    model, data: FitData, device, shard: tuple[int, int], batch_size: int = 256
) -> tuple[float, float]:
    """validate() on the validation split shared out over the ranks; the same numbers on every rank.

    Each rank takes whole batches of the split, so every batch, and hence the result up to the
    order of one float64 sum, is the one a single process computes.
    """
    rank, world = shard
    if world == 1:
        return validate(model, data.val_x, data.val_y, data.val_index, data.mean, device, batch_size)
    n = len(data.val_index)
    batches = math.ceil(n / batch_size)
    lo, hi = (min(n, batch_size * (batches * r // world)) for r in (rank, rank + 1))
    loss_sum, abs_sum = 0.0, 0.0
    if hi > lo:
        loss, mae = validate(model, data.val_x, data.val_y, data.val_index[lo:hi], data.mean, device, batch_size)
        loss_sum, abs_sum = loss * (hi - lo), mae * (hi - lo)
    loss_sum, abs_sum = sum_over_ranks(loss_sum, abs_sum)
    return loss_sum / n, abs_sum / n


class EpochBatchNormAverage:
    """Make every BatchNorm keep the plain average of this epoch's batch statistics.

    The reference's Keras BatchNorm keeps an exponential average with momentum 0.99 that starts
    at mean 0, variance 1. With a few steps per epoch (a few hundred images) it lags the weights
    by dozens of epochs, so validation in eval mode sees wrong statistics: on the 248-image real
    sample the validation MSE after 30 epochs was 9.96 with the EMA and 2.02 with statistics
    recomputed for the final weights. Averaging over the current epoch costs nothing extra.

    How: each BatchNorm keeps only its latest batch's statistics (momentum 1); ``add`` sums them
    after every step and ``finish`` puts the average in place. (PyTorch's own cumulative average,
    momentum None, reads a counter back from the device in every layer at every step: that
    stalls a GPU and cuts a torch.compile graph into pieces.)
    """

    def __init__(self, model) -> None:
        norms = [
            m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = 1.0
        self.statistics = [s for norm in norms for s in (norm.running_mean, norm.running_var)]
        self.sums = [torch.zeros_like(s) for s in self.statistics]
        self.steps = 0

    def add(self) -> None:
        if self.sums:
            torch._foreach_add_(self.sums, self.statistics)  # one kernel for all layers on a GPU
        self.steps += 1

    def finish(self) -> None:
        if self.steps:
            for statistic, total in zip(self.statistics, self.sums):
                statistic.copy_(total / self.steps)


def training_batch(
    data: FitData,
    index: torch.Tensor,
    cfg: TrainConfig,
    device,
    generator: torch.Generator,
    mean: torch.Tensor,
    shard: tuple[int, int] = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images a step trains on, augmented as ``cfg`` says (drawing from ``generator``) and
    normalised with ``mean`` (on ``device``), and their targets: the training rows ``index`` of
    ``data``, this rank's share of them under DDP (``shard``: rank, world size)."""
    rank, world = shard
    # the batch's rows, where the set lives (on a GPU when data_device put it there)
    on_data = to_device_async(data.train_index[index], data.train_x.device)
    # moved while still uint8 (4x smaller than floats), so a GPU does the augmentation
    x = take(data.train_x, on_data).to(device, non_blocking=True)  # (B, 3, H, W) uint8
    target = data.train_y[on_data].to(device, non_blocking=True)
    if cfg.augment:
        x = random_shift_flip(x, cfg.shift, True, generator)
    photometric_on = bool(cfg.color_jitter or cfg.rotate or cfg.blur)
    if photometric_on:  # on [0, 1] floats, before the mean goes; else the plain path below
        x = photometric(x.float().div_(255.0), cfg.color_jitter, cfg.rotate, cfg.blur, generator)
    # sliced after augmenting the whole global batch, so every rank's generator stays in step
    x, target = x[rank::world], target[rank::world]
    x = x.sub(mean) if photometric_on else to_input(x, mean, device)
    return x, target


def teacher_batch(data: FitData, index: torch.Tensor, device, shard: tuple[int, int] = (0, 1)) -> torch.Tensor | None:
    """The teacher's values (B, T) for the training rows ``index`` (this rank's share), on ``device``;
    None for an untaught set."""
    if data.teacher is None:
        return None
    rank, world = shard
    return data.teacher[data.train_index[index].to(data.teacher.device)][rank::world].to(device, non_blocking=True)


def train_step(
    model,
    optimizer,
    x,
    target,
    device,
    amp: torch.dtype | None,
    share: float | None = None,
    teacher: torch.Tensor | None = None,
    teacher_weight: float = 0.5,
) -> torch.Tensor:
    """One optimizer step on the batch ``x`` (already on ``device``, normalised); returns its loss.

    ``share`` weights the loss under DDP, which averages the ranks' gradients: the share of the
    global batch this rank holds, times the world size, so the average is the global batch's mean.
    ``teacher``: the teacher's values for the batch, learnt from with ``teacher_weight`` on the
    labelled photos (training/teaching.py); None trains on the grades alone.
    """
    with autocast(device, amp):
        outputs = model(x)
    if teacher is None:
        loss = model.loss(outputs.float(), target)  # the loss in fp32 whatever the forward ran in
    else:
        loss = taught_loss(model, outputs.float(), target, teacher, teacher_weight)
    optimizer.zero_grad(set_to_none=True)
    (loss * share if share is not None else loss).backward()
    optimizer.step()
    return loss


def eager_only(eager: bool = True):
    """A context in which a ``model.compile()``d network runs eagerly (``eager`` False: does nothing).

    Validation and a last, smaller batch run so: each would otherwise compile another graph (eval
    mode, another size), costing about another warm-up for a few per cent of the work.
    """
    return torch.compiler.set_stance("force_eager") if eager else contextlib.nullcontext()


def train_one_epoch(
    model,
    optimizer,
    data: FitData,
    cfg: TrainConfig,
    device,
    generator,
    progress=None,
    shard: tuple[int, int] = (0, 1),
    ema: ModelEma | None = None,
) -> float:
    """One pass over the shuffled training set; returns the mean training loss.

    ``shard`` is (rank, world size) under DistributedDataParallel: every rank draws the same
    permutation and augmentation and trains on its slice of each global batch of
    ``cfg.batch_size`` images. A last batch with fewer images than ranks is skipped.
    ``ema``, when given, is updated after every optimizer step.
    """
    rank, world = shard
    model.train()
    averages = EpochBatchNormAverage(model) if cfg.bn_stats == "epoch" else None
    n = len(data.train_index)
    order = torch.randperm(n, generator=generator)
    amp = autocast_dtype(cfg.amp, device)
    total, seen = torch.zeros((), device=device), 0
    mean = data.mean.to(device)
    compiled = cfg.compile == "on"
    for start in range(0, n, cfg.batch_size):
        index = order[start : start + cfg.batch_size]
        if len(index) < world:
            break  # DDP needs every rank to take the step
        # a compiled network meets one batch size: a last, smaller batch would compile a second
        # graph, taking about as long as the first, for one step an epoch
        eager = compiled and len(index) < cfg.batch_size
        rows = len(index[rank::world])  # this rank's share of the batch
        share = rows * world / len(index)  # 1.0 unless the batch splits unevenly
        x, target = training_batch(data, index, cfg, device, generator, mean, shard)
        teacher = teacher_batch(data, index, device, shard)
        with eager_only(eager):
            loss = train_step(
                model, optimizer, x, target, device, amp, share if world > 1 else None, teacher, cfg.distill_weight
            )
        if averages is not None:
            averages.add()
        if ema is not None:
            ema.update()  # after the step, while the BatchNorms hold this batch's statistics
        # accumulate on the device: float() here would be a GPU sync point on every step
        total += loss.detach() * rows
        seen += rows
        if progress is not None:
            progress.update(rows * world)
    if averages is not None:
        averages.finish()
    total, seen = sum_over_ranks(float(total), seen)
    return total / seen


def fit(
    model,
    data: FitData,
    cfg: TrainConfig,
    device: torch.device,
    run_dir,
    meta: Checkpoint | None,
    resume: Checkpoint | None = None,
    on_epoch_end: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Train for ``cfg.epochs`` epochs, keeping the best checkpoint by validation loss.

    Args:
        model: a GradingModel (backbone + head), already on ``device``.
        data: the training and validation tensors and the mean image.
        cfg: the training settings.
        run_dir: where best.pt and last.pt are written (atomically) after every epoch.
        meta: what every checkpoint holds beside the weights (config, grade names, mean image,
            the head's state, ...); None writes no checkpoint (a caller that wants the history).
        resume: the last.pt to continue from, or None for a fresh start.
        on_epoch_end: called with the history after each epoch (writes history.csv and plots).

    Under torchrun every rank calls this and trains its share of each batch (see distributed.py);
    rank 0 alone writes checkpoints, prints and calls ``on_epoch_end``.

    With ``cfg.ema`` the moving average of the weights (training/ema.py) is what is validated and
    what best.pt holds; last.pt holds the live weights, the optimizer and the average.

    Returns:
        The history: one dict per epoch (epoch, train_loss, val_loss, val_mae, lr, seconds).
    """
    optimizer = build_optimizer(model, cfg.lr, cfg.l2, cfg.backbone_lr_scale)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best_val = math.inf
    start_epoch = 0
    # every rank keeps its own average: DDP keeps the weights identical on all of them
    ema = ModelEma(model, cfg.ema) if cfg.ema else None
    if resume is not None:
        state = resume.training
        if state is None:
            raise CheckpointError(f"{run_dir / LAST} holds no training state to resume: train again with --overwrite")
        model.load_state_dict(resume.model_state)
        if ema is not None:
            if state.ema_state is None:
                raise CheckpointError(
                    f"{run_dir / LAST} holds no weight average for train.ema {cfg.ema}: train again with --overwrite"
                )
            ema.load_checkpoint(state.ema_state, state.ema_steps)
        optimizer.load_state_dict(state.optimizer_state)
        generator.set_state(state.generator_state)
        history = list(state.history)
        best_val = float(state.best_val_loss)
        start_epoch = int(resume.epoch)
    shard = (distributed.rank(), distributed.world_size())
    main = distributed.is_main()
    trained, frozen = None, False
    show_bar = sys.stderr.isatty() and main
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.freeze_backbone_epochs and (trained is None or frozen != (epoch < cfg.freeze_backbone_epochs)):
            # Decided by the epoch number alone, so a resumed run freezes exactly as an unbroken one.
            # Without gradients autograd stops at the head: frozen epochs skip the backbone's
            # backward pass. Its BatchNorms stay in train mode: their statistics follow the new
            # photos (colour, light, framing differ from the source's), which costs no weights.
            frozen = epoch < cfg.freeze_backbone_epochs
            model.backbone.requires_grad_(not frozen)
            # DDP fixes the parameters it averages when it is built (those needing gradients), so
            # wrap again at each change: once more at the unfreeze, rather than have DDP search the
            # graph for unused parameters at every step (find_unused_parameters)
            trained = None
        if trained is None:
            trained = distributed.wrap(model, device)  # DDP over the ranks; ``model`` itself when alone
        lr = cfg.lr * lr_factor(epoch, cfg.epochs)
        set_lr(optimizer, lr)
        t0 = time.perf_counter()
        bar = (
            tqdm(
                total=len(data.train_index),
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="img",
                leave=False,
                file=sys.stderr,
            )
            if show_bar
            else None
        )
        try:
            train_loss = train_one_epoch(trained, optimizer, data, cfg, device, generator, bar, shard=shard, ema=ema)
        finally:
            if bar is not None:
                bar.close()
        distributed.average_batchnorm_statistics(model)
        if ema is not None:
            ema.average_over_ranks()
        with ema.applied() if ema is not None else contextlib.nullcontext():  # the model holds the average within
            with eager_only(cfg.compile == "on"):
                val_loss, val_mae = validate_sharded(model, data, device, shard)
        seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_mae": val_mae,
            "lr": lr,
            "seconds": round(seconds, 3),
        }
        history.append(row)
        improved = val_loss < best_val
        if improved:
            best_val = val_loss
        if not main:
            continue  # rank 0 alone writes and prints
        if improved and meta is not None:
            best_state = ema.state_dict() if ema is not None else model.state_dict()
            meta.replace(model_state=best_state, epoch=epoch + 1, val_loss=val_loss).save(run_dir / BEST)
        # last.pt is written after best.pt: a crash between the two replays this epoch on resume
        if meta is not None:
            training = TrainingState(
                optimizer_state=optimizer.state_dict(),
                generator_state=generator.get_state(),
                history=history,
                best_val_loss=best_val,
                finished=epoch + 1 == cfg.epochs,
                **(ema.checkpoint() if ema is not None else {}),
            )
            last = meta.replace(model_state=model.state_dict(), epoch=epoch + 1, val_loss=val_loss, training=training)
            last.save(run_dir / LAST)
        mark = " *" if improved else ""
        logger.info(
            f"epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f} val_loss {val_loss:.4f} "
            f"val_mae {val_mae:.3f} lr {lr:.1e} {seconds:.1f}s{mark}"
        )
        if on_epoch_end is not None:
            on_epoch_end(history)
    if cfg.freeze_backbone_epochs:
        model.backbone.requires_grad_(True)  # a run shorter than the freeze leaves a normal model
    return history
