"""Run configuration: dataclasses with documented defaults, YAML loading and validation.

Precedence: the defaults below < ``--config run.yaml`` < command-line flags.

The sections' dataclasses, with a documented default under each field, are in
``config/sections.py``; this module puts them together (``RunConfig``), adds the named presets,
and loads, saves and compares configs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from imgrade.config.safe_yaml import read_yaml
from imgrade.config.sections import (
    AMP_CHOICES,
    BN_STATS,
    CLASS_WEIGHTS,
    COMPILE_CHOICES,
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
    "COMPILE_CHOICES",
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
    "read_config_file",
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
            values = raw.get(f.name)
            values = {} if values is None else values
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {f.name!r} must be a mapping of keys, got {_shown(values)}")
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
    if not isinstance(values.get("settings") or {}, dict):
        raise ConfigError(f"{where}.settings must be a mapping of names to values, got {_shown(values['settings'])}")
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
            raise ConfigError(f"unknown key {_shown(key)} in {where}: {hint}")


def _build(section_cls, values: dict, where: str):
    types = {f.name: f.type for f in fields(section_cls)}
    return section_cls(**{key: _coerce(types[key], value, f"{where}.{key}") for key, value in values.items()})


def _coerce(expected: str, value: Any, where: str) -> Any:
    """``value`` as the annotated type ``expected`` asks ("int", "float", "bool", "str", "str | None",
    "list[str] | None", ...), or a ConfigError naming ``where``."""
    expected = expected if isinstance(expected, str) else getattr(expected, "__name__", str(expected))
    if value is None:
        if expected in ("int", "float", "bool", "str"):
            raise ConfigError(f"{where} has no value (null): give one, or drop the key for the default")
        return value
    if expected in ("int", "float") and isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if expected == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_shown(value)}")
    if expected == "float":
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {_shown(value)}")
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {_shown(value)}")
    if expected == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {_shown(value)}")
    if expected in ("str", "str | None") and isinstance(value, os.PathLike):  # a Path from Python code
        value = os.fspath(value)
    if expected in ("str", "str | None") and not isinstance(value, str):
        raise ConfigError(f"{where} must be text, got {_shown(value)}{_quote_hint(value)}")
    if "list[str]" in expected:  # a comma-separated string or a list of names
        if not isinstance(value, (str, list)):
            raise ConfigError(f"{where} must be a list of names or a comma-separated string, got {_shown(value)}")
        if isinstance(value, list):
            for item in value:
                if isinstance(item, bool) or not isinstance(item, (str, int)):
                    raise ConfigError(f"{where} must be a list of names, but holds {_shown(item)}{_quote_hint(item)}")
            value = [str(item) for item in value]
    if expected.startswith("dict") and not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of names to values, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """``repr(value)`` on one line, shortened past 60 characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else f"{text[:60]}... ({len(text)} characters)"


def _quote_hint(value: Any) -> str:
    """What to write instead of ``value`` where a name is expected, after the value shown."""
    if isinstance(value, bool):
        return " (YAML reads yes, no, on, off, true and false unquoted as true or false): quote the word"
    if isinstance(value, (list, dict)):
        return ": write one name"
    return ": quote it"


def load_config(path: str | Path | None, preset: str | None = None) -> RunConfig:
    """Load a YAML run config (plain data, never executed) over a preset's values (``PRESETS``);
    None gives the defaults."""
    base = _preset(preset)
    if path is None:
        return RunConfig.from_dict(base, source=f"preset {preset}")
    path = Path(path)
    raw = read_config_file(path)
    if preset and isinstance(raw, dict):
        raw = {section: {**base.get(section, {}), **(raw.get(section) or {})} for section in {*base, *raw}}
    try:
        return RunConfig.from_dict(raw, source=str(path))
    except ConfigError as e:  # a section's own check names the flag: say which file set it
        if str(path) in str(e):
            raise
        raise ConfigError(f"config file {path}: {e}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The sections in the YAML file ``path``, as plain dicts, read within ``safe_yaml``'s bounds
    (not yet checked against the dataclasses: :func:`load_config` does that).

    Raises:
        ConfigError: the file is missing, not a regular file, not YAML, over the bounds, empty, or
            not a mapping of sections.
    """
    raw = read_yaml(path, missing_fix="check the --config path")
    if raw is None:
        raise ConfigError(
            f"config file {path} is empty: write the sections to set ({', '.join(SECTIONS)}), or drop --config"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of sections ({', '.join(SECTIONS)}), got {_kind(raw)}: "
            "start each section with a line such as `train:`"
        )
    return raw


def _kind(value: Any) -> str:
    kinds = {list: "a list", str: "text", bool: "true or false", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


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
