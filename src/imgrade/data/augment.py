"""Augmentation on whole batches of tensors: no per-image Python on the hot path."""

from __future__ import annotations

import torch

from imgrade.core.perf import to_device_async


def random_shift_flip(
    x: torch.Tensor, max_shift: float, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` of its size and flip half of them left-right.

    Pixels shifted in from outside repeat the nearest edge pixel, as Keras' ImageDataGenerator
    (fill_mode="nearest") does in the reference. Works on any dtype (uint8 included).

    Args:
        x: (B, C, H, W) batch.
        max_shift: largest shift as a fraction of H and W (0.1 in the reference).
        flip: whether to flip a random half horizontally.
        generator: the random stream (CPU), so runs are reproducible and resumable.

    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> torch.equal(random_shift_flip(x, 0.0, False), x)
    True
    """
    B, _, H, W = x.shape
    max_dy, max_dx = int(max_shift * H), int(max_shift * W)
    if max_dy == 0 and max_dx == 0 and not flip:
        return x
    dy = torch.randint(-max_dy, max_dy + 1, (B,), generator=generator)
    dx = torch.randint(-max_dx, max_dx + 1, (B,), generator=generator)
    rows = (torch.arange(H)[None, :] - dy[:, None]).clamp_(0, H - 1)  # (B, H)
    cols = (torch.arange(W)[None, :] - dx[:, None]).clamp_(0, W - 1)  # (B, W)
    if flip:
        flipped = torch.rand(B, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    rows, cols = to_device_async(rows, x.device), to_device_async(cols, x.device)
    # gather rows then columns; clamping the index is the "nearest" fill
    out = torch.gather(x, 2, rows[:, None, :, None].expand(B, x.shape[1], H, W))
    return torch.gather(out, 3, cols[:, None, None, :].expand(B, x.shape[1], H, W))
