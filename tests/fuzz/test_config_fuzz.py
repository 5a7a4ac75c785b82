"""Fuzzed config files: random configs dumped as YAML, the same texts damaged, YAML token soup,
and deep, aliased and self-referring constructions, each read with ``load_config``.

For every input:

- a RunConfig or a ConfigError comes out: no other exception, no traceback at the CLI;
- the error is one line and names the file;
- a config accepted is written (``dump_config``, as a run saves it) and read back the same;
- each input finishes within ``SECONDS_PER_INPUT`` (10 s; IMGRADE_FUZZ_SECONDS): a guard against
  hangs and expansions, not a speed goal.

Default counts keep this file to seconds. ``IMGRADE_FUZZ_EXAMPLES=20000`` runs every test with
that many inputs; ``TALLY`` holds the outcome counts, which tests/fuzz/conftest.py prints.
"""

from __future__ import annotations

import string
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import yaml
from fuzzing import SECONDS_PER_INPUT, fuzz, time_limit
from hypothesis import example, given
from hypothesis import strategies as st

from imgrade.config import (
    AMP_CHOICES,
    BN_STATS,
    CLASS_WEIGHTS,
    HEADS,
    OBJECTIVES,
    RESIZE_MODES,
    SECTIONS,
    TARGETS,
    TRACKERS,
    VIEWS,
    RunConfig,
    dump_config,
    load_config,
)
from imgrade.core.errors import ConfigError
from imgrade.core.registry import head_settings, task_names

TALLY = {"config": {"inputs": 0, "imgrade_errors": 0, "accepted": 0, "unexpected": 0, "slowest_s": 0.0}}


def read_config(data: bytes) -> RunConfig | ConfigError:
    """Write ``data`` as a config file and load it: the config, or the ConfigError (one line naming
    the file). Anything else fails the test and counts as unexpected in ``TALLY``."""
    tally = TALLY["config"]
    tally["inputs"] += 1
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "run.yaml")
        path.write_bytes(data)
        try:
            try:
                with time_limit(SECONDS_PER_INPUT):
                    cfg = load_config(path)
            except ConfigError as error:
                message = str(error)
                assert len(message.splitlines()) == 1 and str(path) in message, f"not one line naming it: {message!r}"
                tally["imgrade_errors"] += 1
                return error
            saved = Path(tmp, "config.yaml")
            saved.write_text(dump_config(cfg))
            assert load_config(saved) == cfg, "the config read back from its dump differs"
            tally["accepted"] += 1
            return cfg
        except BaseException:
            tally["unexpected"] += 1
            raise
        finally:
            tally["slowest_s"] = max(tally["slowest_s"], time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Random configs: the real sections and keys (and misspelt ones), values of every YAML kind

KEYS = {name: [f.name for f in fields(cls)] for name, cls in SECTIONS.items()}
KEYS["model"] += list(head_settings())

PLAUSIBLE = st.sampled_from(
    [
        "above",
        "all",
        "pad",
        "crop",
        "0.6,0.2,0.2",
        "published",
        "ordinal",
        "continuous",
        "auto",
        "off",
        "sord",
        "corn",
        "coral",
        "classification",
        "linear",
        "timm:resnet18",
        "reference",
        "hub",
        "balanced",
        "ema",
        "cpu",
        "bf16",
        "tensorboard,mlflow",
        "mlflow",
        "huber",
        "qwk",
        "mae",
        "2L,L,M",
        "",
    ]
)
CHARACTERS = st.sampled_from(string.printable + "\x00\x01\x1b\x7f\x85\xa0é\u2028\u2029\ufeff\ue000😀")
"""An explicit alphabet: YAML's special characters, controls, line breaks it knows, non-ASCII
(hypothesis's own alphabets cost seconds to build)."""
TEXT = st.text(CHARACTERS, max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 2, 3, 11, 20, 29, 32, 2**63 - 1, 2**63, 2**64, -(2**63) - 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, 0.001, 0.1, 0.5, 0.99, 1.0, 1e-300, 1e300, -0.0])
    | TEXT
    | PLAUSIBLE
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=4,
)


CHOICES = {
    "data.view": VIEWS,
    "data.resize": RESIZE_MODES,
    "data.target": TARGETS,
    "data.grades": (["2L", "L", "M"], "S,M", [0, 1, 2]),
    "model.task": task_names(),
    "model.head": HEADS,
    "train.class_weight": CLASS_WEIGHTS,
    "train.bn_stats": BN_STATS,
    "train.amp": AMP_CHOICES,
    "train.log_to": (*TRACKERS, ["mlflow", "tensorboard"], "none"),
    "calibrate.objective": OBJECTIVES,
}
"""Values a field accepts besides its default, for configs meant to be valid."""


def good_value(section: str, key: str):
    """A value ``section.key`` accepts: its default or one of its choices."""
    default = RunConfig().to_dict()[section].get(key)
    return st.sampled_from([default, *CHOICES.get(f"{section}.{key}", ())])


@st.composite
def configs(draw) -> dict:
    """A mapping of sections, most of them real, each with keys, most of them real; half of them
    hold only values the fields accept (so that accepted configs are common too)."""
    good = draw(st.booleans())
    config = {}
    for _ in range(draw(st.integers(0, 4))):
        if good:
            section = draw(st.sampled_from(list(KEYS)))
            keys = draw(st.lists(st.sampled_from(KEYS[section]), max_size=4, unique=True))
            config[section] = {key: draw(good_value(section, key)) for key in keys}
            continue
        section = draw(st.sampled_from(list(KEYS)) | TEXT)
        keys = KEYS.get(section, ["x"])
        values = draw(
            st.dictionaries(st.sampled_from(keys) | TEXT, VALUES, max_size=4) | st.sampled_from([None, [], 0, "text"])
        )
        config[section] = values
    return config


def dumped(config) -> bytes:
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False).encode()


@fuzz(100)
@given(configs(), st.booleans())
@example({"data": {"grades": [["2L", "L"], "M"]}}, False)  # the reported TypeError
@example({"data": {"grades": ["a\nb", "a\nb"]}}, False)  # a grade twice, its name on two lines
@example({"train": {"lr": float("inf")}}, False)
@example({"train": {"seed": 10**30}}, True)
def test_random_configs(config, flow):
    read_config(yaml.safe_dump(config, allow_unicode=True, default_flow_style=flow).encode())


# ---------------------------------------------------------------------------------------------
# Damaged texts and token soup

SEEDS = [
    dumped({"data": {"grades": ["2L", "L", "M"], "split": "0.6,0.2,0.2"}, "train": {"epochs": 3, "lr": 0.01}}),
    dumped({"model": {"task": "sord", "sord_beta": 2.0}, "calibrate": {"alpha": 0.2, "tta": True}}),
    b"# a run\ndata:\n  path: photos/\n  grades: &g [2L, L, M]\ntrain: {epochs: 3, lr: 1e-3, augment: yes}\n",
    b"base: &b {epochs: 2}\ntrain:\n  <<: *b\n  seed: 4\n",
    b"train:\n  epochs: !!int 3\n  lr: !!float 0.1\n  log_to: [tensorboard]\n---\n",
    b"\xef\xbb\xbfdata:\n  view: all\n  image_size: 0x20\n",
]
PIECES = [
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "- ",
    "? ",
    "\n",
    "  ",
    "\t",
    "#",
    "'",
    '"',
    "|\n",
    ">-\n",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "!!int ",
    "!!float ",
    "!!bool ",
    "!!str ",
    "!!binary ",
    "!!timestamp ",
    "!!set ",
    "!!omap ",
    "!!python/object/apply:os.system ",
    "!x ",
    ".inf",
    "-.inf",
    ".nan",
    "1e999",
    "1e-3",
    "9" * 30,
    "9" * 5000,
    "0x" + "f" * 20,
    "1:2:3:4:5:6:7:8:9:10:11:12",
    "0o777",
    "2020-13-45",
    "2001-12-14t21:59:43.10-05:00",
    "null",
    "yes",
    "off",
    "data",
    "train",
    "model",
    "grades",
    "epochs",
    "lr",
    "task",
    "\\x00",
    "\x00",
    "\ufeff",
    "\u2028",
    "é",
]


@st.composite
def damaged(draw) -> bytes:
    """A seed with pieces inserted, ranges deleted or repeated, a byte changed, or cut short."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["insert", "delete", "repeat", "byte", "truncate"]))
        if how == "insert":
            data[at:at] = draw(st.sampled_from(PIECES)).encode()
        elif how == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif how == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 16))] * draw(st.integers(2, 50))
        elif how == "byte" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        else:
            del data[at:]
    return bytes(data)


SOUP = st.lists(st.sampled_from(PIECES) | st.text(CHARACTERS, max_size=4), max_size=40).map(
    lambda parts: "".join(parts).encode()
)


@fuzz(200)
@given(damaged() | SOUP | st.binary(max_size=64))
@example(b"? [a]\n: 1\n")
@example(b"train: {epochs: !!int ten}\n")
@example(b"train:\n  epochs: !!int")  # IndexError in PyYAML's int constructor
@example(b"data: {split: 2020-13-45}\n")
def test_damaged_texts_and_token_soup(data):
    read_config(data)


# ---------------------------------------------------------------------------------------------
# Deep, aliased and self-referring constructions


@st.composite
def constructions(draw) -> bytes:
    kind = draw(st.sampled_from(["flow", "block", "mixed", "laughs", "merge", "alias-depth", "recursive"]))
    depth = draw(st.integers(1, 60))
    if kind == "flow":
        text = "data:\n  grades: " + "[" * depth + "2L" + "]" * depth
    elif kind == "block":
        text = "".join(f"{'  ' * level}k:\n" for level in range(depth)) + "  " * depth + "v"
    elif kind == "mixed":
        openings = [draw(st.sampled_from(["[", "{a: "])) for _ in range(depth)]
        text = "train: " + "".join(openings) + "1" + "".join("]" if o == "[" else "}" for o in reversed(openings))
    elif kind in ("laughs", "merge"):
        width, levels = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        if kind == "laughs":
            lines = [f"  - &a0 [{', '.join(['lol'] * width)}]"]
            lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
            text = "data:\n grades:\n" + "\n".join(f" {line}" for line in lines)
        else:
            lines = ["a0: &a0 {x: 1}"]
            lines += [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * width)}], y{i}: 1}}" for i in range(1, levels)]
            text = "\n".join(lines)
    elif kind == "alias-depth":
        text = f"x: &d {'[' * depth}1{']' * depth}\ny: {'[' * depth}*d{']' * depth}"
    else:
        text = draw(st.sampled_from(["data: &a {grades: *a}", "x: &a [*a]", "x: &a {? *a : 1}", "x: &a {<<: *a}"]))
    return (text + "\n").encode()


@fuzz(60)
@given(constructions())
def test_deep_aliased_and_self_referring_constructions(data):
    read_config(data)


# What a volume run (IMGRADE_FUZZ_EXAMPLES) runs.
FUZZ_TESTS = {
    "config": [
        test_random_configs,
        test_damaged_texts_and_token_soup,
        test_deep_aliased_and_self_referring_constructions,
    ]
}
