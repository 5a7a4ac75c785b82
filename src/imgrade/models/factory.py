"""Backbone + head = a grading model, built from config values."""

from __future__ import annotations

import difflib

import torch
from torch import nn

from imgrade.core.errors import ConfigError
from imgrade.models.heads import Head, RegressionHead
from imgrade.models.resnet_v2 import ResNetV2

HEADS = ("regression",)


class GradingModel(nn.Module):
    """Images -> head outputs; ``loss`` and ``decode`` are the head's."""

    def __init__(self, backbone: nn.Module, head: Head) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))  # (B, head outputs)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.head.loss(outputs, target)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.head.decode(outputs)


def build_model(
    depth: int = 29,
    head: str = "regression",
    hidden: int = 8,
    loss: str = "mse",
    num_grades: int | None = None,
) -> GradingModel:
    """Build the reference ResNetV2 with the named head.

    Args:
        depth: backbone depth, 9n+2.
        head: head name; one of ``HEADS``.
        hidden: hidden width of the regression head (0: one linear layer).
        loss: regression loss, "mse" or "huber".
        num_grades: number of grades, for the classification and ordinal heads; the regression
            head does not use it.

    Raises:
        ConfigError: an unknown head, a bad depth, hidden width or loss.

    >>> model = build_model(depth=11, hidden=0)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 1])
    """
    if head not in HEADS:
        close = difflib.get_close_matches(head, HEADS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown head {head!r}: {hint}set --head to one of {', '.join(HEADS)}"
        )
    backbone = ResNetV2(depth=depth)
    return GradingModel(backbone, RegressionHead(backbone.num_features, hidden=hidden, loss=loss))
