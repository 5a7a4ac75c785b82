"""Speed settings for training: mixed precision and copies to the GPU that do not stall it.

The allocator, the other big CPU lever, is set before the process starts (``allocator.py``).
"""

from __future__ import annotations

import contextlib

import torch


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The dtype forward passes autocast to, or None for plain fp32.

    "auto" means bf16 on a CUDA GPU that supports it and fp32 elsewhere: on the CPU bf16 is about
    1.7x faster where the CPU has bf16 instructions (AVX512-BF16, AMX) but moves the numbers away
    from the fp32 reference's, so it has to be asked for ("bf16"). ``amp`` is ``train.amp``,
    already checked by the config.

    >>> autocast_dtype("auto", torch.device("cpu")) is None
    True
    >>> autocast_dtype("bf16", torch.device("cpu"))
    torch.bfloat16
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    assert amp == "auto", f"amp {amp!r} passed the config's check"
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


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
