"""``--compile auto|on|off``: whether a run's training step is torch.compile'd, decided by measuring.

torch.compile turns the network's forward and backward passes into generated kernels. Its first
step pays a warm-up (tracing, then generating and compiling C++ or GPU code: 47 s to minutes for
the reference network on a shared 2-core CPU, seconds when inductor's on-disk cache already holds
the graph from an earlier run), after which a step may be faster, or not: on that CPU (no bf16
units) the compiled step was no faster when the cores were quiet. So ``auto`` measures, on the machine and the run at hand:

1. Two deep copies of the network, each with its own optimizer, train on one real batch of the
   run's size and precision; the real network and optimizer are never touched, and every random
   state the probe could draw from (torch's, numpy's, Python's) is put back afterwards, so a run
   whose probe says off trains exactly as ``--compile off``.
2. One eager step (after an untimed one) gives the run's planned eager time, steps x step. Under
   ``PROBE_MIN_EAGER_S`` no warm-up can be repaid, and the probe stops there: off, having cost two
   steps. Short runs (and the test suite's) never compile.
3. Otherwise the second copy is compiled; its first two steps, less two steady compiled steps, are
   the warm-up. Then ``PROBE_ROUNDS`` eager and compiled steps alternate, so both meet the same
   load on a shared machine, and their medians are the step times.
4. :func:`compile_pays` compares ``warm-up + steps x compiled`` with ``steps x eager``: on only when
   compiled is ``COMPILE_MARGIN`` faster over the run, so noise does not flip a close call.

The probe's compile is not wasted when it picks on: the real network's compile then finds the
graph in inductor's cache (seconds, not minutes). When it picks off, the probe cost one warm-up.
A run compiles one graph: validation and an epoch's last, smaller batch run eagerly
(``training.loop.eager_only``), so the probe's one warm-up is the run's, but for
``--freeze-backbone-epochs``, whose frozen backbone is a second graph: its warm-up counts twice.
Under DDP rank 0 probes alone and sends its choice (the trainer calls it through
``distributed.on_main``); an ensemble's members all take the first member's choice.
"""

from __future__ import annotations

import contextlib
import copy
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from imgrade.config import TrainConfig
from imgrade.core.errors import ConfigError
from imgrade.core.perf import autocast_dtype
from imgrade.training.loop import EpochBatchNormAverage, FitData, train_step, training_batch
from imgrade.training.optim import build_optimizer

COMPILE_MARGIN = 0.05
"""auto compiles only when the compiled run, warm-up included, is at least this share faster."""
PROBE_MIN_EAGER_S = 60.0
"""auto compiles nothing for a run whose eager steps take less than this in all: an uncached
compile's warm-up alone took about as long on a CPU, so no speed-up could repay it."""
PROBE_ROUNDS = 3
"""Eager and compiled steps timed, alternately, after the warm-up; the medians count."""
FIX = "install a C++ compiler (g++ or clang; torch.compile on the CPU needs one), or train with --compile off"
"""What a user does when torch.compile fails on their machine."""


@dataclass(frozen=True)
class CompileChoice:
    """What a run does (``compile``: "on" or "off") and, for its start line, why (empty: as told, off)."""

    compile: str
    why: str = ""


def compile_pays(
    eager_s: float, compiled_s: float, warmup_s: float, steps: int, margin: float = COMPILE_MARGIN
) -> bool:
    """Whether ``steps`` compiled steps plus the warm-up take less than ``1 - margin`` of the eager steps.

    >>> compile_pays(0.041, 0.039, 48.0, 600)  # 1.2 s saved, 48 s spent
    False
    >>> compile_pays(0.050, 0.035, 30.0, 20000)  # 300 s saved
    True
    """
    return warmup_s + steps * compiled_s < (1 - margin) * steps * eager_s


def planned_steps(cfg: TrainConfig, num_train: int) -> int:
    """The run's compiled steps: its full batches (a last, smaller batch runs eagerly), over all epochs.

    >>> planned_steps(TrainConfig(epochs=200, batch_size=32), 148)  # 4 full batches an epoch, and 20 images
    800
    """
    return cfg.epochs * (num_train // cfg.batch_size)


def compile_model(model: torch.nn.Module) -> None:
    """torch.compile ``model`` in place, so its parameter names and checkpoints stay as they are."""
    model.compile()


def resolve_compile(
    cfg: TrainConfig,
    model: torch.nn.Module,
    data: FitData,
    device: torch.device,
    world: int = 1,
    resuming: bool = False,
) -> CompileChoice:
    """``cfg.compile`` as the run will train and record it: "on" or "off", with the reason (see the
    module docstring).

    ``world`` is the number of DDP processes: each trains on its share of the global batch. A
    resumed run keeps the choice it recorded, unprobed, so it trains as it began (a config.yaml that
    still says auto was written by hand: off). ``on`` is checked on a copy before the run starts.

    Raises:
        ConfigError: ``--compile on`` and torch.compile fails here (no C++ compiler, say).
    """
    if cfg.compile == "off" or (resuming and cfg.compile == "auto"):
        return CompileChoice("off")
    with kept_rng():
        x, target = probe_batch(data, cfg, device, world)
        if cfg.compile == "auto":
            try:
                return probe(cfg, model, x, target, device, planned_steps(cfg, len(data.train_index)))
            except torch.OutOfMemoryError:  # two more copies of a network that only just fits
                return CompileChoice("off", "compile auto -> off: no memory for the probe's copies of the network")
        try:
            step = _Step(model, cfg)
            compile_model(step.model)
            warmup_s = step(x, target, device)
        except Exception as e:  # any failure in compiling: the message says which
            raise ConfigError(f"--compile on: torch.compile failed here ({_first_line(e)}): {FIX}") from None
        return CompileChoice("on", f"compile on: {warmup_s:.0f} s warm-up on a copy")


def probe(
    cfg: TrainConfig, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, device: torch.device, steps: int
) -> CompileChoice:
    """``--compile auto``: time eager and compiled steps on copies of ``model``; on where it pays."""
    if steps == 0:
        return CompileChoice("off", f"compile auto -> off: no full batch of {cfg.batch_size} to compile")
    with kept_rng():
        eager = _Step(model, cfg)
        eager(x, target, device)  # the first step of any network sets up kernels and memory
        eager_s = eager(x, target, device)
        if steps * eager_s < PROBE_MIN_EAGER_S:
            return CompileChoice(
                "off",
                f"compile auto -> off: eager {1000 * eager_s:.0f} ms/step x {steps} steps = {steps * eager_s:.0f} s, "
                f"too short to repay a compile",
            )
        compiled = _Step(model, cfg)
        try:
            compile_model(compiled.model)
            first = compiled(x, target, device) + compiled(x, target, device)
        except Exception as e:  # no C++ compiler, an operation torch.compile does not support, ...
            return CompileChoice("off", f"compile auto -> off: torch.compile failed here ({_first_line(e)})")
        eager_times, compiled_times = [], []
        for _ in range(PROBE_ROUNDS):
            eager_times.append(eager(x, target, device))
            compiled_times.append(compiled(x, target, device))
    eager_s, compiled_s = statistics.median(eager_times), statistics.median(compiled_times)
    graphs = 2 if 0 < cfg.freeze_backbone_epochs < cfg.epochs else 1  # frozen and whole: two graphs
    warmup_s = graphs * max(0.0, first - 2 * compiled_s)
    choice = "on" if compile_pays(eager_s, compiled_s, warmup_s, steps) else "off"
    return CompileChoice(
        choice,
        f"compile auto -> {choice}: eager {1000 * eager_s:.0f} ms/step, compiled {1000 * compiled_s:.0f} ms/step "
        f"+ {warmup_s:.0f} s warm-up over {steps} steps",
    )


def probe_batch(
    data: FitData, cfg: TrainConfig, device: torch.device, world: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank 0's share of a batch of the first ``cfg.batch_size`` training images, as the loop makes
    it (augmented, normalised: the same sizes, dtype and layout, which a compiled graph is made for),
    and their targets. The augmentation draws from a generator of its own."""
    index = torch.arange(min(cfg.batch_size, len(data.train_index)))
    generator = torch.Generator(device="cpu").manual_seed(0)
    return training_batch(data, index, cfg, device, generator, data.mean.to(device), (0, world))


class _Step:
    """A copy of a network with its own optimizer; calling it takes one timed training step."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig) -> None:
        self.model = copy.deepcopy(model).train()
        if cfg.bn_stats == "epoch":
            EpochBatchNormAverage(self.model)  # the BatchNorms' momentum as the loop sets it: the same graph
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.l2, cfg.backbone_lr_scale)
        self.amp = cfg.amp

    def __call__(self, x: torch.Tensor, target: torch.Tensor, device: torch.device) -> float:
        """Seconds for one step on ``x``, the device's queue included."""
        _synchronize(device)
        t0 = time.perf_counter()
        train_step(self.model, self.optimizer, x, target, device, autocast_dtype(self.amp, device))
        _synchronize(device)
        return time.perf_counter() - t0


@contextlib.contextmanager
def kept_rng() -> Iterator[None]:
    """Put back, on leaving, every random state a probe might draw from: torch's (CPU and GPUs), numpy's, Python's."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    saved = (
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if cuda else None,
        np.random.get_state(),
        random.getstate(),
    )
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        if saved[1] is not None:
            torch.cuda.set_rng_state_all(saved[1])
        np.random.set_state(saved[2])
        random.setstate(saved[3])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _first_line(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
