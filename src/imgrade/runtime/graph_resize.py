"""Photos of any size made square in the graph, pixel for pixel as imgrade's decoder makes them.

``imgrade export --any-size`` puts this in front of the grader graph, so a consumer feeds decoded
RGB photos (N, H, W, 3) of any one size per call and the graph crops or pads them
(``data/resize.py``) and resizes them to the run's square. The resize is Pillow's, as the
decoder uses it (``Image.resize``: BOX when shrinking, BILINEAR otherwise), reproduced step for
step: the same filter coefficients in fixed point with 22 fractional bits, a horizontal pass then
a vertical one, each rounded to uint8. Integer sums in float64 are exact, so the graph's pixels
equal Pillow's (``tests/unit/test_graph_resize.py`` compares them on many sizes).
"""

from __future__ import annotations

import torch

PRECISION_BITS = 32 - 8 - 2
"""Pillow's fixed-point precision for 8-bit images (Resample.c)."""


class GraphResize(torch.nn.Module):
    """uint8 (N, H, W, 3) -> uint8 (N, size, size, 3): the run's crop or pad, then Pillow's resize.

    >>> import numpy as np
    >>> from PIL import Image
    >>> photo = np.random.default_rng(0).integers(0, 256, (1, 45, 70, 3), dtype=np.uint8)
    >>> pillow = np.asarray(Image.fromarray(photo[0]).resize((32, 32), Image.Resampling.BOX))
    >>> bool((GraphResize(32, "squash")(torch.from_numpy(photo))[0].numpy() == pillow).all())
    True
    """

    def __init__(self, size: int, mode: str):
        super().__init__()
        self.size = size
        self.mode = mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.double()  # (N, H, W, 3)
        if self.mode == "crop":
            x = _crop(x)
        elif self.mode == "pad":
            x = _pad(x)
        rows, columns = _positions(x.shape[1]), _positions(x.shape[2])  # (H,), (W,)
        height, width = rows[-1] + 1, columns[-1] + 1  # graph values, not constants
        # Image.resize: BOX when the photo shrinks on both axes, else BILINEAR on both
        box = (height >= self.size) & (width >= self.size)
        x = _resample(x, _coefficients(columns, self.size, box), axis=2)  # horizontal pass first, as Pillow
        x = _resample(x, _coefficients(rows, self.size, box), axis=1)
        return x.to(torch.uint8)


def _positions(length) -> torch.Tensor:
    """0, 1, ..., length - 1 in float64."""
    return torch.arange(length, dtype=torch.float64)


def _crop(x: torch.Tensor) -> torch.Tensor:
    """The centred square of the shorter side."""
    height, width = x.shape[1], x.shape[2]
    side = torch.sym_min(height, width)
    return x.narrow(1, (height - side) // 2, side).narrow(2, (width - side) // 2, side)


def _pad(x: torch.Tensor) -> torch.Tensor:
    """Centred on a square of the longer side; the bands take the mean colour (rounded half to
    even, as NumPy's rint) of the two edges they extend (``data.resize.pad_square``)."""
    height, width = x.shape[1], x.shape[2]
    side = torch.sym_max(height, width)
    rows = torch.cat([x[:, 0], x[:, -1]], dim=1).mean(dim=1)  # (N, 3) top and bottom rows
    columns = torch.cat([x[:, :, 0], x[:, :, -1]], dim=1).mean(dim=1)  # (N, 3) left and right columns
    wide = _positions(width)[-1] > _positions(height)[-1]
    fill = torch.round(torch.where(wide, rows, columns)).view(-1, 1, 1, 3)  # (N, 1, 1, 3)
    top, left = (side - height) // 2, (side - width) // 2
    x = torch.cat([fill.expand(-1, top, width, 3), x, fill.expand(-1, side - height - top, width, 3)], dim=1)
    return torch.cat([fill.expand(-1, side, left, 3), x, fill.expand(-1, side, side - width - left, 3)], dim=2)


def _coefficients(positions: torch.Tensor, out_size: int, box: torch.Tensor) -> torch.Tensor:
    """(out_size, in_size) float64: Pillow's fixed-point filter coefficients (``precompute_coeffs``
    and ``normalize_coeffs_8bpc`` in Resample.c) for an axis whose pixels are at ``positions``."""
    in_size = positions[-1] + 1
    scale = in_size / out_size
    filterscale = torch.clamp(scale, min=1.0)
    support = torch.where(box, 0.5, 1.0) * filterscale
    centre = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale  # (out,)
    first = torch.clamp(torch.floor(centre - support + 0.5), min=0.0)  # (out,)
    last = torch.minimum(torch.floor(centre + support + 0.5), in_size)  # (out,) exclusive
    arg = (positions.unsqueeze(0) - centre.unsqueeze(1) + 0.5) * (1.0 / filterscale)  # (out, in)
    box_weight = ((arg > -0.5) & (arg <= 0.5)).double()
    bilinear_weight = torch.clamp(1.0 - arg.abs(), min=0.0)
    inside = (positions.unsqueeze(0) >= first.unsqueeze(1)) & (positions.unsqueeze(0) < last.unsqueeze(1))
    weight = torch.where(box, box_weight, bilinear_weight) * inside.double()
    weight = weight / weight.sum(dim=1, keepdim=True)
    return torch.floor(0.5 + weight * (1 << PRECISION_BITS))


def _resample(x: torch.Tensor, coefficients: torch.Tensor, axis: int) -> torch.Tensor:
    """One pass along ``axis`` (1: vertical, 2: horizontal) of (N, H, W, 3), rounded and clipped to 0..255."""
    moved = x.movedim(axis, -1)  # (N, ..., 3, in)
    total = torch.matmul(moved, coefficients.t())  # exact: integers below 2**53
    pixels = torch.clamp(torch.floor((total + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)), 0.0, 255.0)
    return pixels.movedim(-1, axis)
