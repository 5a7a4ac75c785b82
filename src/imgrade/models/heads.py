"""Heads: each owns its layers, its loss and its decoding to a score on the grade axis.

The training loop only calls ``head(features)``, ``head.loss(outputs, target)`` and
``head.decode(outputs)``, so it does not know which head it drives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgrade.core.errors import ConfigError
from imgrade.models.resnet_v2 import init_keras_

REGRESSION_LOSSES = ("mse", "huber")


class Head(nn.Module):
    """Base class: features (B, in_features) -> outputs; subclasses define the three methods."""

    name: str = "head"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss; ``target`` is float (B,), a grade index or a continuous value."""
        raise NotImplementedError

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Float score (B,) on the grade axis (0 = first grade, 1 = second, ...)."""
        raise NotImplementedError


class RegressionHead(Head):
    """One number per image: the reference's Dense(8, relu) -> Dense(1).

    Args:
        in_features: width of the backbone features.
        hidden: width of the hidden layer; 0 for a single linear layer.
        loss: "mse", or "huber" (delta 1.0).

    Raises:
        ConfigError: ``hidden`` is negative or ``loss`` is unknown.

    >>> head = RegressionHead(4, hidden=0)
    >>> outputs = head(torch.zeros(2, 4))
    >>> outputs.shape, head.decode(outputs).shape
    (torch.Size([2, 1]), torch.Size([2]))
    """

    name = "regression"

    def __init__(self, in_features: int, hidden: int = 8, loss: str = "mse") -> None:
        super().__init__()
        if hidden < 0:
            raise ConfigError(f"head hidden width {hidden} is negative: set --hidden to 0 or more")
        if loss not in REGRESSION_LOSSES:
            raise ConfigError(
                f"regression loss {loss!r} is unknown: "
                f"set --loss to one of {', '.join(REGRESSION_LOSSES)}"
            )
        self.hidden = hidden
        self.loss_name = loss
        if hidden > 0:
            self.layers = nn.Sequential(
                nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
        else:
            self.layers = nn.Sequential(nn.Linear(in_features, 1))
        init_keras_(self)  # he_normal kernels, zero biases, as the reference's Dense layers

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)  # (B, 1)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared (or Huber) error between the output and the target score.

        >>> head = RegressionHead(4)
        >>> float(head.loss(torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 1.0])))
        2.0
        """
        prediction = outputs[:, 0]  # (B,)
        target = target.to(prediction.dtype)
        if self.loss_name == "huber":
            return F.huber_loss(prediction, target, delta=1.0)
        return F.mse_loss(prediction, target)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """The output itself, as (B,)."""
        return outputs[:, 0]  # (B,)
