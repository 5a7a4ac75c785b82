"""Weight averaging: an exponential moving average (EMA) of the model's weights, as timm's ModelEmaV3.

After every optimizer step each averaged tensor moves a little towards the live one:
``average = decay * average + (1 - decay) * live``. The average of the last few hundred steps
sits nearer the middle of the valley the noisy steps of a small set bounce around in, so it often
validates better than the live weights of any single step. ``fit`` validates the average, saves it
as best.pt (so predict, evaluate, export and serve use it without knowing about EMA) and stores it
with its step count in last.pt, so --resume continues it exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from imgrade.training import distributed

WARMUP_STEPS = 10
"""Scale of the warm-up: the effective decay is (1 + step) / (WARMUP_STEPS + step) until ``decay`` caps it."""


def ema_decay(decay: float, step: int) -> float:
    """The decay used at update number ``step`` (0 for the first): min(decay, (1 + step) / (10 + step)).

    Why a warm-up: the average starts as the random initial weights, and a plain decay keeps
    decay**n of them after n steps: 0.999**500 = 0.61, so a 50-epoch run of 300 photos would
    validate a model still mostly random. The warm-up (TensorFlow's ExponentialMovingAverage with
    ``num_updates``) averages over about the last 10% of the steps taken so far, so the start
    fades fast, and the full ``decay`` applies once (1 + step) / (10 + step) reaches it.

    >>> ema_decay(0.999, 0)
    0.1
    >>> round(ema_decay(0.999, 90), 3)
    0.91
    >>> ema_decay(0.9, 1000)
    0.9
    """
    return min(decay, (1 + step) / (WARMUP_STEPS + step))


class ModelEma:
    """The moving average of one model's parameters and buffers, in fp32, bound to that model.

    Buffers are averaged too, so the BatchNorm statistics are an average as well. How they relate
    to --bn-stats epoch (each BatchNorm reset at every epoch and holding the epoch's average at its
    end): during an epoch a BatchNorm's running statistics are those of the latest batch
    (momentum 1), and ``update`` runs after each step, so the averaged statistics are the same
    decay-weighted average of the batches' statistics as the averaged weights are of the steps'
    weights: both look back equally far. Copying the live model's epoch average at the end of each
    epoch instead would pair weights averaged over, say, 1000 steps (100 epochs of 10 steps) with
    statistics of the last 10 steps' weights only. Integer buffers (num_batches_tracked) are copied.

    Args:
        model: the model being trained (not a DDP wrapper: the names are its state_dict's).
        decay: the average's decay, in (0, 1).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        live = model.state_dict()  # detached tensors sharing the model's storage
        self.names = list(live)
        # the model's tensors themselves: the loop only changes them in place (optimizer steps,
        # BatchNorm resets, DDP's broadcasts, SyncBatchNorm's conversion), so these stay its own
        self.live = list(live.values())
        self.average = [t.detach().clone().float() if t.is_floating_point() else t.detach().clone() for t in self.live]
        pairs = list(zip(self.live, self.average))
        self._float_live = [t for t, _ in pairs if t.is_floating_point()]
        self._float_average = [a for t, a in pairs if t.is_floating_point()]
        self._other = [(t, a) for t, a in pairs if not t.is_floating_point()]
        self._cast = any(t.dtype != torch.float32 for t in self._float_live)  # a model kept in half precision
        bn_names = {
            f"{name}.{buffer}"
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None
            for buffer in ("running_mean", "running_var")
        }
        self._statistics = [a for name, a in zip(self.names, self.average) if name in bn_names]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current tensors (call after each optimizer step)."""
        weight = 1.0 - ema_decay(self.decay, self.steps)
        # in fp32 whatever the forward ran in (--amp casts activations, never the weights);
        # one foreach kernel per dtype instead of one per tensor: ~200 tensors per step
        live = [t.float() for t in self._float_live] if self._cast else self._float_live
        torch._foreach_lerp_(self._float_average, live, weight)
        for live_tensor, average in self._other:
            average.copy_(live_tensor)
        self.steps += 1

    def average_over_ranks(self) -> None:
        """Under DDP, replace the averaged BatchNorm statistics by their mean over the ranks.

        Every rank takes the same steps, so the averaged weights agree; but on the CPU each rank's
        BatchNorms see only its part of each batch. The average is linear, so the mean over ranks
        of the ranks' averages is the average of the steps' mean statistics, as one process keeps.
        """
        distributed.average_over_ranks(self._statistics)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged model as a model state dict (the model's names and dtypes): what best.pt holds."""
        return {name: a.to(t.dtype) for name, a, t in zip(self.names, self.average, self.live)}

    def checkpoint(self) -> dict:
        """What last.pt keeps to continue the average exactly: its tensors and its step count."""
        return {"ema_state": {name: a for name, a in zip(self.names, self.average)}, "ema_steps": self.steps}

    def load_checkpoint(self, state: dict, steps: int) -> None:
        """Continue the average stored by ``checkpoint`` in a last.pt: its tensors and step count."""
        for name, average in zip(self.names, self.average):
            average.copy_(state[name])
        self.steps = int(steps)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; afterwards its own again, bit for bit.

        The model is evaluated in place, rather than a copy: a copy of a ``model.compile()``d
        module would still call the original's compiled forward, and this way the compiled graph
        is reused.
        """
        with torch.no_grad():
            kept = [t.clone() for t in self.live]
            for live, average in zip(self.live, self.average):
                live.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for live, saved in zip(self.live, kept):
                    live.copy_(saved)
