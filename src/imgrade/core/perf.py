"""Speed settings for training: mixed precision and copies to the GPU that do not stall it.

The allocator, the other big CPU lever, is set before the process starts (``allocator.py``).
"""

from __future__ import annotations

import contextlib

import torch

from imgrade.core.cpu import cpu_has_bf16


def resolve_amp(amp: str, device: torch.device, resuming: bool = False) -> str:
    """``train.amp`` as a run records it: "bf16" or "off".

    "auto" means bf16 on a CUDA GPU that supports it and on a CPU with native bf16
    (:func:`cpu_has_bf16`), where it trains about 1.7x faster with the same accuracy on the real
    CUCUMBER-9 sample (docs/training.md); fp32 elsewhere. A run resumed with "auto" in its config was
    started before runs recorded their precision, when "auto" meant fp32 on a CPU: it keeps that.
    ``amp`` is already checked by the config.

    >>> resolve_amp("off", torch.device("cpu")), resolve_amp("bf16", torch.device("cpu"))
    ('off', 'bf16')
    >>> resolve_amp("auto", torch.device("cpu"), resuming=True)
    'off'
    """
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "off"
    return "bf16" if device.type == "cpu" and not resuming and cpu_has_bf16() else "off"


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The dtype forward passes autocast to, or None for plain fp32 (``amp``: see :func:`resolve_amp`).

    >>> autocast_dtype("off", torch.device("cpu")) is None
    True
    >>> autocast_dtype("bf16", torch.device("cpu"))
    torch.bfloat16
    """
    return torch.bfloat16 if resolve_amp(amp, device) == "bf16" else None


def precision_name(amp: str, device: torch.device) -> str:
    """How a run with ``amp`` computes on ``device``, for its log.

    >>> precision_name("off", torch.device("cpu"))
    'fp32'
    """
    return "bf16 autocast" if resolve_amp(amp, device) == "bf16" else "fp32"


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; a context that does nothing for None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def to_device_async(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (indices, shifts) on ``device`` without waiting for the GPU's queue.

    A plain copy to a GPU blocks the CPU until the GPU has finished everything queued so far, so
    the next step cannot be prepared while this one computes; a copy from pinned memory does not.
    On the CPU ``x`` comes back as it is.
    """
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
