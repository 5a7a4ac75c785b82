"""Grading with several looks: an ensemble of networks, and test-time augmentation.

Both wrap grading models and combine their outputs with the head's own ``average``, which works
in the head's output space so that the grade probabilities (and so the expected-grade score) of
the combination are the mean of the parts': averaged probabilities for the classifiers and
ordinal heads, averaged scores for regression. What comes out is again one head's outputs, so
``decode``, ``probabilities``, ``predict_grade``, calibration, export and the service treat an
ensemble, or a model under test-time augmentation, exactly like one network.
"""

from __future__ import annotations

import torch
from torch import nn

from imgrade.models.factory import DecodesWithHead
from imgrade.models.heads import Head

TTA_SHIFT = 1 / 16
"""Test-time shifts, as a fraction of the image size (2 pixels at 32): well inside the training
shifts (up to 10%), so every view is one the network was trained on."""


class EnsembleModel(DecodesWithHead, nn.Module):
    """K grading models of the same task and grades, graded as one: their outputs averaged.

    Args:
        members: the trained models (GradingModel), each with the same head type and grades.

    >>> from imgrade.models.factory import build_model
    >>> ensemble = EnsembleModel([build_model(depth=11, task="classification", num_grades=3) for _ in range(2)]).eval()
    >>> ensemble(torch.zeros(4, 3, 32, 32)).shape
    torch.Size([4, 3])
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    @property
    def head(self) -> Head:
        """The first member's head: every member decodes the same way (not a submodule, so the
        state dict holds each member once)."""
        return self.members[0].head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([member(x) for member in self.members])  # (K, B, O)
        return self.head.average(outputs)  # (B, O)


def tta_offsets(size: int) -> list[tuple[int, int, bool]]:
    """The test-time views as (dy, dx, flipped): the image, its mirror, and shifts up, down, left, right.

    >>> tta_offsets(32)
    [(0, 0, False), (0, 0, True), (-2, 0, False), (2, 0, False), (0, -2, False), (0, 2, False)]
    """
    d = max(1, round(TTA_SHIFT * size))
    return [(0, 0, False), (0, 0, True), (-d, 0, False), (d, 0, False), (0, -d, False), (0, d, False)]


class TTAModel(DecodesWithHead, nn.Module):
    """Grade each image as the average over a few views of it (flip and small shifts).

    The views are made as in training (``data.augment.random_shift_flip``): on the image before
    the mean image is subtracted, with pixels shifted in from outside repeating the nearest edge.
    The inputs are normalised images (x / 255 minus ``mean``), as every model here takes; all
    views go through the network as one batch.

    Args:
        model: a GradingModel or EnsembleModel.
        mean: the training set's mean image (3, H, W) the inputs had subtracted.

    >>> from imgrade.models.factory import build_model
    >>> model = TTAModel(build_model(depth=11, task="coral", num_grades=4), torch.zeros(3, 32, 32)).eval()
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 3])
    """

    def __init__(self, model: nn.Module, mean: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        _, height, width = mean.shape
        self.register_buffer("mean", mean.detach().clone().float(), persistent=False)
        rows, cols = [], []
        for dy, dx, flipped in tta_offsets(height):
            r = (torch.arange(height) - dy).clamp(0, height - 1)  # clamping the index is the "nearest" fill
            c = (torch.arange(width) - dx).clamp(0, width - 1)
            rows.append(r)
            cols.append(c.flip(0) if flipped else c)
        self.register_buffer("rows", torch.stack(rows), persistent=False)  # (V, H)
        self.register_buffer("cols", torch.stack(cols), persistent=False)  # (V, W)

    @property
    def views(self) -> int:
        return len(self.rows)

    @property
    def head(self) -> Head:
        return self.model.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        raw = x + self.mean  # (B, 3, H, W): the image in [0, 1] again
        views = [raw.index_select(2, r).index_select(3, c) for r, c in zip(self.rows, self.cols)]
        stacked = torch.cat(views) - self.mean  # (V * B, 3, H, W), view-major
        outputs = self.model(stacked)  # (V * B, O)
        return self.head.average(outputs.reshape(self.views, batch, -1))  # (B, O)
