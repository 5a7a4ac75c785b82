"""The one input transform shared by training, evaluation and serving."""

from __future__ import annotations

import numpy as np
import torch


def to_input(x: torch.Tensor, mean: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1] minus the training set's per-pixel mean, on ``device``.

    >>> x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    >>> to_input(x, torch.full((3, 2, 2), 0.5))[0, 0, 0, 0].item()
    0.5
    """
    return x.to(device, non_blocking=True).float().div_(255.0).sub_(mean.to(device))


def nhwc_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) array -> contiguous uint8 tensor (N, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
