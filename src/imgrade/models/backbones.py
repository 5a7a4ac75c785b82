"""Backbones: any network registered in ``imgrade.core.registry``, behind one ``forward_features``.

A backbone maps images (B, 3, H, W) to pooled features (B, num_features); the heads, the training
loop, calibration, export and serving only ever call ``forward_features`` and read
``num_features``. The registry names each ``--backbone`` and its builder:

- ``reference``: the Keras CIFAR-10 ResNet v2 of ``resnet_v2.py``, ``depth`` 9n+2 (``build_reference``);
- ``timm:NAME``: any of ``timm.list_models()``, optionally pretrained (``timm_backbone.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from imgrade.core.errors import ConfigError
from imgrade.core.registry import BackboneEntry, describe_backbone, import_target, resolve_backbone
from imgrade.models.resnet_v2 import ResNetV2


def build_reference(*, depth: int = 29, **_: Any) -> ResNetV2:
    """The reference backbone: ResNet v2 of ``depth`` (9n+2); it takes any image size."""
    return ResNetV2(depth=depth)


def describe(backbone: str, depth: int) -> str:
    """The backbone in a log line.

    >>> describe("reference", 29), describe("timm:resnet18", 29)
    ('ResNet v2 depth 29', 'timm resnet18')
    """
    return describe_backbone(backbone, depth)


def _load(entry: BackboneEntry, target: str | Callable) -> Callable:
    """``target`` itself, or the function its import path "module:function" names."""
    return import_target(target, f"backbone {entry.name!r} is registered with", "register_backbone line")


def check_backbone(backbone: str, pretrained: str | None = None) -> None:
    """Fail fast, before any data is read: an unknown name, and whatever the backbone's ``check`` finds
    (for timm: timm missing, an unknown timm name, a missing weights file).

    Raises:
        ConfigError: any of those, in one line with the fix.
    """
    entry, model = resolve_backbone(backbone, pretrained)
    if entry.check is not None:
        _load(entry, entry.check)(*([model] if entry.family else []), pretrained=pretrained)


def build_backbone(
    name: str = "reference", depth: int = 29, pretrained: str | None = None, *, image_size: int | None = None
) -> nn.Module:
    """Build the registered backbone ``name`` ("reference", "timm:NAME", or any other registered one).

    Args:
        name: the ``--backbone`` value: one of ``imgrade.core.registry.backbone_names()``, a
            family's followed by ":" and a model name.
        depth: ``--depth``, for the backbones that use it (the reference's 9n+2).
        pretrained: weights to start from, for backbones registered with ``takes_pretrained``
            (timm: a state dict file or "hub"); None for random weights.
        image_size: the input size, for networks built for one size (timm's vision
            transformers); None: unknown, unchecked.

    Raises:
        ConfigError: an unknown name, ``pretrained`` for a backbone that takes none, a builder
            that cannot be imported or returns no backbone, or the builder's own errors (timm not
            installed, weights that cannot be had or do not fit).

    >>> build_backbone("reference", depth=11).num_features
    256
    """
    entry, model = resolve_backbone(name, pretrained)
    build = _load(entry, entry.target)
    backbone = build(*([model] if entry.family else []), depth=depth, image_size=image_size, pretrained=pretrained)
    if not (
        isinstance(backbone, nn.Module)
        and callable(getattr(backbone, "forward_features", None))
        and isinstance(getattr(backbone, "num_features", None), int)
    ):
        raise ConfigError(
            f"backbone {name!r} was built as a {type(backbone).__name__}, not an nn.Module with forward_features(x) "
            "and an int num_features: fix its builder"
        )
    return backbone
