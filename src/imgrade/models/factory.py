"""Backbone + head = a grading model, built from config values."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import torch
from torch import nn

from imgrade.config.sections import HEADS
from imgrade.core.errors import ConfigError
from imgrade.core.registry import head_entry, head_settings, import_target
from imgrade.models.backbones import build_backbone
from imgrade.models.heads import Head


def head_class(task: str) -> type[Head]:
    """The ``Head`` subclass registered as ``task`` (see ``imgrade.core.registry``), imported on first use.

    Raises:
        ConfigError: ``task`` is not registered, its class cannot be imported, is not a ``Head``, or
            names itself differently.

    >>> head_class("corn").__name__
    'CornHead'
    """
    entry = head_entry(task)
    target = import_target(entry.target, f"task {task!r} is registered as", "register_head line")
    if not (isinstance(target, type) and issubclass(target, Head)):
        raise ConfigError(
            f"task {task!r} is registered with {target!r}, which is not a Head subclass: fix its register_head line"
        )
    if target.name != task:
        raise ConfigError(
            f"task {task!r} is registered with {target.__name__}, whose name is {target.name!r}: set its name = {task!r}"
        )
    return target


class DecodesWithHead:
    """``task``, ``num_grades``, ``loss``, ``decode``, ``probabilities`` and ``predict_grade`` of a
    module whose outputs are its ``head``'s: a network, an ensemble of them, or one under test-time
    augmentation (models/ensemble.py)."""

    head: Head

    @property
    def task(self) -> str:
        return self.head.name

    @property
    def num_grades(self) -> int | None:
        return self.head.num_grades

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.head.loss(outputs, target)

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.head.distill_loss(outputs, teacher)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.head.decode(outputs)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor | None:
        return self.head.probabilities(outputs)

    def predict_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.head.predict_grade(outputs)


class GradingModel(DecodesWithHead, nn.Module):
    """Images -> head outputs; ``loss``, ``decode``, ``probabilities`` and ``predict_grade`` are the head's."""

    def __init__(self, backbone: nn.Module, head: Head) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)  # (B, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, head outputs)


def _unknown(kind: str, value: str, choices: tuple[str, ...], flag: str) -> ConfigError:
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"unknown {kind} {value!r}: {hint}set {flag} to one of {', '.join(choices)}")


def build_model(
    depth: int = 29,
    task: str = "regression",
    head: str = "auto",
    num_grades: int | None = None,
    class_weights: torch.Tensor | np.ndarray | None = None,
    *,
    backbone: str = "reference",
    pretrained: str | None = None,
    image_size: int | None = None,
    state: dict[str, Any] | None = None,
    **settings: Any,
) -> GradingModel:
    """Build the backbone (the reference ResNetV2, a timm model, or another registered one) with the head for ``task``.

    Args:
        depth: the reference backbone's depth, 9n+2.
        task: how the grade is learned; one of ``imgrade.core.registry.task_names()``.
        head: the layers before the output: "reference" (Dense(8, relu), as the reference),
            "linear" (none), or "auto" (reference for regression, linear for the others).
        num_grades: number of grades K; None for a continuous target (regression only).
        class_weights: per-grade loss weights (K,), e.g. from ``balanced_class_weights``; None
            for none.
        backbone: "reference", "timm:NAME" or another of ``imgrade.core.registry.backbone_names()``
            (see ``backbones.build_backbone``).
        pretrained: timm backbones: a weights file or "hub"; None for random weights (and when
            rebuilding a trained model, whose checkpoint holds all the weights).
        image_size: timm backbones: the input size they are built for and checked with.
        state: the head's state (``Head.state`` of the trained head, or ``Head.initial_state``).
        **settings: the task's own settings by name (e.g. ``loss="huber"``, ``sord_beta=2.0``);
            the rest keep their defaults.

    Raises:
        ConfigError: an unknown task or head, a bad depth, a setting the task does not have or a
            bad value of one, a grade task on a continuous target, class weights that do not fit
            the grades, or a backbone that cannot be built (see ``backbones.build_backbone``).

    >>> model = build_model(depth=11, task="coral", num_grades=5)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 4])
    """
    make_head = head_class(task)
    if head not in HEADS:
        raise _unknown("head", head, HEADS, "--head")
    entry = head_entry(task)
    for name in settings:
        if name not in entry.setting_names():
            owner = head_settings().get(name)
            whose = f"a setting of --task {owner.name}" if owner else "no head's setting"
            raise ConfigError(f"{name} is {whose}; task {task} does not take it: drop --{name.replace('_', '-')}")
    features = build_backbone(backbone, depth, pretrained, image_size=image_size)
    head_module = make_head.create(
        features.num_features, num_grades, head, class_weights, entry.make_settings(settings), state or {}
    )
    return GradingModel(features, head_module)
