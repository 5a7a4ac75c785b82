"""Training on several processes (GPUs, nodes) with DistributedDataParallel, launched by torchrun.

torchrun starts one process per GPU (or several CPU processes) and tells each its place through
environment variables: RANK (0..WORLD_SIZE-1 over all nodes), LOCAL_RANK (on this node),
WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Every process runs the same `imgrade train`:

- each loads the data and builds the same model from the same seed;
- rank 0 alone touches the run folder (checks, split, checkpoints, history, plots, calibration) and
  sends what the others need (the split, a resumed state, or the error to raise) over the group;
- every global batch of ``--batch-size`` images is split over the ranks, and DDP averages the
  gradients, so a step sees the same images as one process would.

Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op and training is the plain
single-process loop.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from imgrade.core.errors import ConfigError, ImgradeError

TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for a rank that stopped answering before it fails instead of hanging."""


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True in the process that writes files and prints: rank 0, or the only process.

    Outside the process group (before ``process_group`` starts it, or after it ends) torchrun's
    ``RANK`` says which process this is, so a line printed then is printed once too.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join the other torchrun processes for the duration of the block; alone, do nothing."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not launched or dist.is_initialized():
        yield
        return
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed: run `imgrade train` without torchrun")
    _import_before_the_group()
    # gloo carries CPU tensors (and the pickled objects of `on_main`), NCCL the CUDA gradients
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield
        dist.barrier()  # leave together: no rank closes its connections while another still waits on them
    finally:
        dist.destroy_process_group()  # frees the group, whose destructor joins gloo's threads


def _import_before_the_group() -> None:
    """Import ``torch.distributed.nn`` before the group exists, so that ``destroy_process_group`` ends gloo.

    Why: its functions take ``group=group.WORLD`` as a default, evaluated on import, and DDP imports
    it (through torch._dynamo). Imported after ``init_process_group``, it kept the group alive, and
    with it gloo's worker threads, into the interpreter's shutdown; a worker freeing the last
    collective's tensor there needs the GIL, Python ends the thread with pthread_exit, and unwinding
    through a noexcept destructor aborts the rank ("terminate called without an active exception").
    Imported first, the defaults are None, and the group dies, threads joined, while Python runs.
    """
    import torch.distributed.nn  # noqa: F401


def process_device(device: torch.device) -> torch.device:
    """Under torchrun, ``cuda`` means this process's own GPU, cuda:LOCAL_RANK."""
    if world_size() == 1 or device.type != "cuda":
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.index is not None:
        raise ConfigError(
            f"--device {device} under torchrun: each process takes cuda:LOCAL_RANK itself, pass --device cuda"
        )
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"torchrun started process {local_rank} on a node with {torch.cuda.device_count()} GPUs: "
            "set --nproc-per-node to at most the number of GPUs"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def on_main(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on rank 0 only and return its result on every rank.

    An ImgradeError raised on rank 0 (a finished run in --out, no config.yaml to resume, ...) is
    raised on every rank, so all processes exit with the same one-line message instead of the
    others waiting for a rank that has gone.
    """
    if world_size() == 1:
        return fn(*args)
    message: list[Any] = [None]
    if is_main():
        try:
            message = [("ok", fn(*args))]
        except ImgradeError as e:
            message = [("error", e)]
        except BaseException:
            message = [("crash", None)]
            dist.broadcast_object_list(message, src=0)
            raise
    dist.broadcast_object_list(message, src=0)
    kind, value = message[0]
    if kind == "error":
        raise value
    if kind == "crash":
        raise RuntimeError("rank 0 failed while preparing the run: its traceback says why")
    return value


def sum_over_ranks(*values: float) -> list[float]:
    """Each number summed over all ranks (float64 on the CPU); the numbers themselves when alone.

    >>> sum_over_ranks(1.5, 2)
    [1.5, 2]
    """
    if world_size() == 1:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


class GradingDDP(DistributedDataParallel):
    """DDP that still offers the grading model's ``loss``, so one training loop drives either."""

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.module.loss(outputs, target)

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.module.distill_loss(outputs, teacher)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model to train with: DDP over all ranks, or ``model`` itself when alone.

    On CUDA the BatchNorms become SyncBatchNorm, which normalises with the statistics of the whole
    global batch, as one process would. torch has no SyncBatchNorm on the CPU, so there each rank
    normalises with its own part of the batch (the reason the CPU test needs a tolerance).
    ``model`` keeps its parameters, so optimizers and checkpoints keep working on it.
    """
    if world_size() == 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # buffers are not broadcast from rank 0 at every step: each rank keeps its own BatchNorm
    # averages over the epoch and average_batchnorm_statistics merges them before validation
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}
    return GradingDDP(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def average_batchnorm_statistics(model: torch.nn.Module) -> None:
    """Replace each BatchNorm's running mean and variance by their average over the ranks.

    With ``--bn-stats epoch`` each rank averaged the statistics of its part of every batch, so the
    average over ranks is the average over the epoch's batches, as in one process; afterwards all
    ranks validate and save the same model.
    """
    average_over_ranks(
        [
            buffer
            for module in model.modules()
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None
            for buffer in (module.running_mean, module.running_var)
        ]
    )


def average_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over the ranks; alone, leave them as they are."""
    if world_size() == 1:
        return
    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor.div_(world_size())
