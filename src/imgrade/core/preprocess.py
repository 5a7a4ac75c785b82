"""The one input transform shared by training, evaluation and serving."""

from __future__ import annotations

import warnings

import numpy as np
import torch

MEAN_CHUNK = 1024
"""Images per step of ``mean_image``: what it holds at once, whatever the size of the set."""


def to_input(x: torch.Tensor, mean: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1] minus the training set's per-pixel mean, on ``device``.

    >>> x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    >>> to_input(x, torch.full((3, 2, 2), 0.5))[0, 0, 0, 0].item()
    0.5
    """
    return x.to(device, non_blocking=True).float().div_(255.0).sub_(mean.to(device))


def nhwc_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) array -> uint8 tensor (N, 3, H, W) over the same memory: nothing is copied.

    The tensor is channels_last, the layout the network's weights have, so the first convolution
    needs no reorder either. A read-only array (a memory-mapped cache file) gives a tensor that
    is only ever read: batches are gathered from it, never written into it.

    >>> images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    >>> x = nhwc_to_tensor(images)
    >>> x.shape, x.is_contiguous(memory_format=torch.channels_last), x.data_ptr() == images.ctypes.data
    (torch.Size([2, 3, 4, 4]), True, True)
    """
    if images.flags.writeable:
        return torch.from_numpy(images).permute(0, 3, 1, 2)
    with warnings.catch_warnings():
        # torch warns that writing through such a tensor is undefined; nothing writes through it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(images).permute(0, 3, 1, 2)


def mean_image(images: torch.Tensor, index: torch.Tensor, chunk: int = MEAN_CHUNK) -> torch.Tensor:
    """The per-pixel mean (3, H, W) in [0, 1] of the uint8 ``images`` at ``index``, ``chunk`` at a time.

    The sums are exact, so the result is the true mean rounded once to float32, and a
    memory-mapped set is read ``chunk`` images at a time, never whole.

    >>> images = torch.tensor([0, 255, 51], dtype=torch.uint8).reshape(3, 1, 1, 1).expand(3, 3, 1, 1)
    >>> mean_image(images, torch.tensor([0, 1]), chunk=1)[:, 0, 0].tolist()
    [0.5, 0.5, 0.5]
    """
    assert chunk * 255 < 2**24, "a float32 sum of the chunk must be exact"
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    for start in range(0, len(index), chunk):
        rows = index[start : start + chunk].sort().values  # ascending: a memory-mapped file is read in order
        # every partial sum is an integer below 2**24, so float32 adds exactly (and 3x faster than int64)
        total += images[rows].float().sum(dim=0)
    return total.div_(len(index) * 255.0).float().contiguous()
