"""Augmentation on whole batches of tensors: no per-image Python on the hot path."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imgrade.core.perf import to_device_async
from imgrade.data.images import LUMA_WEIGHTS


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


# ----------------------------------------------------------------------------- photometric
# For real photos: light, white balance, camera angle and focus vary from shot to shot in ways
# the synthetic cucumbers and a few hundred photos do not cover. These work on float batches in
# [0, 1]; the random numbers are drawn on the CPU from ``generator`` and moved to ``x``'s device.


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, columns: int = 1) -> torch.Tensor:
    """(n, columns) numbers uniform in [low, high], drawn on the CPU."""
    return low + (high - low) * torch.rand(n, columns, generator=generator)


def random_color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each image's brightness, contrast, saturation and each channel's gain by 1 +- ``strength``.

    Contrast blends with the image's mean gray level, saturation with each pixel's gray level
    (as torchvision's ColorJitter); the result is clamped to [0, 1].

    Args:
        x: (B, 3, H, W) float batch in [0, 1].
        strength: the largest change as a fraction (0.1: factors in [0.9, 1.1]); 0 returns ``x``.
        generator: the random stream (CPU).

    >>> x = torch.full((2, 3, 4, 4), 0.5)
    >>> out = random_color_jitter(x, 0.1, torch.Generator().manual_seed(0))
    >>> bool(((out - x).abs() <= 0.5 * (1.1 ** 4 - 1)).all()), random_color_jitter(x, 0.0) is x
    (True, True)
    """
    if strength == 0:
        return x
    factors = _uniform(len(x), 1 - strength, 1 + strength, generator, columns=6).to(x.dtype)
    factors = to_device_async(factors, x.device)[:, :, None, None]  # (B, 6, 1, 1)
    brightness, contrast, saturation, gains = factors[:, 0:1], factors[:, 1:2], factors[:, 2:3], factors[:, 3:6]
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device)[None, :, None, None]
    x = x * brightness
    gray_mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = gray_mean + (x - gray_mean) * contrast
    gray = (x * weights).sum(1, keepdim=True)  # (B, 1, H, W)
    x = gray + (x - gray) * saturation
    return (x * gains).clamp_(0.0, 1.0)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its angle (degrees, counter-clockwise) about its centre; bilinear.

    Pixels rotated in from outside repeat the nearest edge pixel (grid_sample's "border"), like
    Keras' fill_mode="nearest" in the reference's shifts. Square images (imgrade's) keep their
    proportions; others would be stretched.

    Args:
        x: (B, C, H, W) float batch.
        degrees: (B,) angles, on any device.

    >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
    >>> rotate(x, torch.tensor([90.0])).round()[0, 0]
    tensor([[2., 5., 8.],
            [1., 4., 7.],
            [0., 3., 6.]])
    """
    radians = degrees.to(device=x.device, dtype=x.dtype).deg2rad()
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    # affine_grid maps each output pixel to where it samples the input; with y pointing down,
    # this matrix makes the picture turn counter-clockwise
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_rotate(x: torch.Tensor, max_degrees: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image by an angle uniform in [-max_degrees, max_degrees]; 0 returns ``x``.

    >>> x = torch.rand(2, 3, 8, 8)
    >>> random_rotate(x, 0.0) is x, random_rotate(x, 10.0, torch.Generator().manual_seed(0)).shape
    (True, torch.Size([2, 3, 8, 8]))
    """
    if max_degrees == 0:
        return x
    degrees = _uniform(len(x), -max_degrees, max_degrees, generator)[:, 0]
    return rotate(x, to_device_async(degrees, x.device))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each image with a Gaussian of its own ``sigma`` (pixels; 0 leaves it as it is).

    Two depthwise 1-D convolutions (rows, then columns) with one kernel per image and reflected
    borders. ``radius`` (at most H - 1 and W - 1, which reflection needs) sets the kernel width
    2 * radius + 1; 3 sigma holds 99.7% of the weight.

    Args:
        x: (B, C, H, W) float batch.
        sigma: (B,) on ``x``'s device.
        radius: half the kernel width.

    >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1.0
    >>> out = gaussian_blur(x, torch.tensor([1.0]), 3)
    >>> round(out.sum().item(), 4), bool(out[0, 0, 4, 4] < 1), torch.equal(gaussian_blur(x, torch.tensor([0.0]), 3), x)
    (1.0, True, True)
    """
    B, C, H, W = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (K,)
    # sigma 0 -> a tiny sigma: exp underflows to exactly 0 off the centre, an exact identity kernel
    kernel = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma.to(x.dtype).clamp_min(1e-3)[:, None] ** 2))  # (B, K)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B * C, K): one per channel
    out = x.reshape(1, B * C, H, W)  # images as channels, so each gets its own kernel (groups)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=B * C)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=B * C)
    return out.reshape(B, C, H, W)


def random_blur(x: torch.Tensor, max_sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur each image with a sigma uniform in [0, max_sigma] pixels; 0 returns ``x``.

    >>> x = torch.full((2, 3, 8, 8), 0.25)
    >>> torch.allclose(random_blur(x, 2.0, torch.Generator().manual_seed(0)), x), random_blur(x, 0.0) is x
    (True, True)
    """
    if max_sigma == 0:
        return x
    H, W = x.shape[-2:]
    radius = min(math.ceil(3 * max_sigma), H - 1, W - 1)
    sigma = _uniform(len(x), 0.0, max_sigma, generator)[:, 0]
    return gaussian_blur(x, to_device_async(sigma, x.device), radius)


def photometric(
    x: torch.Tensor, color_jitter: float, max_degrees: float, blur: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random rotation, colour jitter and blur of a float batch in [0, 1] (see ``TrainConfig``).

    With all three 0 it returns ``x`` itself and draws nothing, so runs without them are
    unchanged bit for bit.

    >>> x = torch.rand(2, 3, 16, 16)
    >>> g = torch.Generator().manual_seed(0)
    >>> photometric(x, 0.0, 0.0, 0.0, g) is x, torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())
    (True, True)
    >>> out = photometric(x, 0.1, 10.0, 1.0, g)
    >>> out.shape, out.dtype, bool(out.min() >= 0 and out.max() <= 1)
    (torch.Size([2, 3, 16, 16]), torch.float32, True)
    """
    x = random_rotate(x, max_degrees, generator)
    x = random_color_jitter(x, color_jitter, generator)
    return random_blur(x, blur, generator)
