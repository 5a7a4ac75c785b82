"""Run configuration: dataclasses with documented defaults, YAML loading and validation.

Precedence: the defaults below < ``--config run.yaml`` < command-line flags.

The sections' dataclasses, with a documented default under each field, are in
``config/sections.py``; this module puts them together (``RunConfig``), adds the named presets,
and loads, saves and compares configs.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from imgrade.config.sections import (
    AMP_CHOICES,
    BN_STATS,
    CLASS_WEIGHTS,
    HEADS,
    OBJECTIVES,
    RESIZE_MODES,
    TARGETS,
    TRACKERS,
    VIEWS,
    CalibrateConfig,
    DataConfig,
    ModelConfig,
    TrainConfig,
    parse_split,
)
from imgrade.core.errors import ConfigError
from imgrade.core.registry import head_settings

__all__ = [
    "AMP_CHOICES",
    "BN_STATS",
    "CLASS_WEIGHTS",
    "FINETUNE_DEFAULTS",
    "HEADS",
    "OBJECTIVES",
    "PRESETS",
    "RESIZE_MODES",
    "SECTIONS",
    "TARGETS",
    "TRACKERS",
    "VIEWS",
    "CalibrateConfig",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "differences",
    "dump_config",
    "load_config",
    "parse_split",
]

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "calibrate": CalibrateConfig}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "reference": {},
    "accurate": {"model": {"task": "sord"}, "train": {"ensemble": 3}},
}
"""Named recipes for ``train --preset``: config values between the defaults and ``--config``.
``reference`` is the defaults (the reference experiment). ``accurate`` won the accuracy benchmark
on the real CUCUMBER-9 sample (benchmarks/accuracy.py, docs/results/accuracy.md): soft ordinal
labels and an ensemble of three, three times the training and grading time of one network.
Test-time augmentation added a point of exact accuracy there at no QWK, for six times the grading
time, so it stays a flag (--tta)."""

FINETUNE_DEFAULTS: dict[str, Any] = {
    "model.task": "corn",
    "train.epochs": 60,
    "train.freeze_backbone_epochs": 5,
    "train.backbone_lr_scale": 0.3,
    "train.color_jitter": 0.1,
}
"""What ``imgrade fewshot`` changes from the defaults for its fine-tuning stage (any flag the user
gives wins). Chosen with benchmarks/few_real.py on the real CUCUMBER-9 sample."""


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts, the layout of config.yaml: the heads' settings sit in ``model`` beside its fields."""
        raw = dataclasses.asdict(self)
        raw["model"].update(raw["model"].pop("settings"))
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        """Build a config from nested dicts; unknown keys fail with the closest known name."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{source} must be a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}"
            )
        _check_keys(raw, list(SECTIONS), source)
        built = {}
        for f in fields(cls):
            section_cls = SECTIONS[f.name]
            values = raw.get(f.name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {f.name!r} must be a mapping, got {values!r}")
            known = [sf.name for sf in fields(section_cls)]
            if section_cls is ModelConfig:
                values = _with_head_settings(values, known, f"{source} model")
                known = [*known, *head_settings()]
            _check_keys(values, known, f"{source} section {f.name!r}")
            built[f.name] = _build(section_cls, values, f"{source} {f.name}")
        return cls(**built)

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """Return a copy with ``{"train.epochs": 30, ...}`` applied (None values are skipped)."""
        raw = self.to_dict()
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, key = dotted.split(".", 1)
            raw[section][key] = value
        return RunConfig.from_dict(raw)


def _with_head_settings(values: dict, fields_: list[str], where: str) -> dict:
    """The model section with the heads' settings (flat in YAML) gathered under ``settings``,
    each checked against the type of the field that declares it."""
    owners = head_settings()
    settings = {key: value for key, value in values.items() if key in owners and key not in fields_}
    if not settings:
        return values
    for key, value in settings.items():
        types = {f.name: f.type for f in fields(owners[key].settings_class())}
        settings[key] = _coerce(types[key], value, f"{where}.{key}")
    rest = {key: value for key, value in values.items() if key not in settings}
    return {**rest, "settings": {**(rest.get("settings") or {}), **settings}}


def _check_keys(values: dict, known: list[str], where: str) -> None:
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key {key!r} in {where}: {hint}")


def _build(section_cls, values: dict, where: str):
    types = {f.name: f.type for f in fields(section_cls)}
    return section_cls(**{key: _coerce(types[key], value, f"{where}.{key}") for key, value in values.items()})


def _coerce(expected: str, value: Any, where: str) -> Any:
    """``value`` as the annotated type ``expected`` asks ("int", "float", "bool"), or a ConfigError naming ``where``."""
    expected = expected if isinstance(expected, str) else getattr(expected, "__name__", str(expected))
    if value is not None and expected in ("int", "float") and isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if expected == "int" and value is not None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    if expected == "float" and value is not None:
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        value = float(value)
    if expected == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def load_config(path: str | Path | None, preset: str | None = None) -> RunConfig:
    """Load a YAML run config (plain data, never executed) over a preset's values (``PRESETS``);
    None gives the defaults."""
    base = _preset(preset)
    if path is None:
        return RunConfig.from_dict(base, source=f"preset {preset}")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: check the --config path")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: fix the syntax") from None
    if preset and isinstance(raw, dict):
        raw = {section: {**base.get(section, {}), **(raw.get(section) or {})} for section in {*base, *raw}}
    return RunConfig.from_dict(raw, source=str(path))


def _preset(name: str | None) -> dict[str, dict[str, Any]]:
    if name is None:
        return {}
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown preset {name!r}: {hint}set --preset to one of {', '.join(PRESETS)}")
    return {section: dict(values) for section, values in PRESETS[name].items()}


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


PATH_KEYS = ("data.path", "model.pretrained", "train.init", "train.log_dir")
"""Keys holding a file or folder: a run stores them resolved, so they compare resolved. The heads'
settings that hold one say so in their field's metadata (``path``): see :func:`path_keys`."""


def path_keys() -> tuple[str, ...]:
    """``PATH_KEYS`` and the heads' settings that hold a file or folder.

    >>> "model.axes" in path_keys()
    True
    """
    settings = [
        f"model.{f.name}"
        for entry in {e.name: e for e in head_settings().values()}.values()
        for f in fields(entry.settings_class())
        if f.metadata.get("path")
    ]
    return (*PATH_KEYS, *settings)


def differences(given: RunConfig, saved: RunConfig, keys: list[str] | None = None) -> list[tuple[str, Any, Any]]:
    """``(key, given value, saved value)`` for each key (default: all) whose values differ.

    Both sides went through the dataclasses, so ``--grades 2L,L`` equals a saved list and
    ``--lr 1`` a saved 1.0. Paths compare resolved. A None in ``given`` means "not set" (the run
    then chose), so it never differs.

    >>> saved = RunConfig().with_overrides({"train.epochs": 30, "data.grades": ["2L", "L"]})
    >>> differences(saved.with_overrides({"data.grades": "2L,L", "train.epochs": 40}), saved)
    [('train.epochs', 40, 30)]
    """
    a, b = given.to_dict(), saved.to_dict()
    keys = keys if keys is not None else [f"{section}.{key}" for section in a for key in a[section]]
    found = []
    for dotted in keys:
        section, key = dotted.split(".", 1)
        mine, theirs = a[section].get(key), b[section].get(key)
        if mine is None:
            continue
        if dotted in path_keys() and mine != "hub" and theirs not in (None, "hub"):
            same = Path(mine).resolve() == Path(theirs).resolve()
        else:
            same = mine == theirs
        if not same:
            found.append((dotted, mine, theirs))
    return found
