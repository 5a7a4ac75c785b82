"""Config files a user (or an attacker) wrote: every one is read within bounds or refused with one
line naming the file, what is wrong and the fix (imgrade.config.safe_yaml, load_config)."""

from __future__ import annotations

import os
import re
import threading

import pytest

from imgrade.config import RunConfig, load_config
from imgrade.config.safe_yaml import MAX_BYTES, MAX_DEPTH, MAX_NODES, parse_yaml
from imgrade.core.errors import ConfigError


def refused(tmp_path, text: str | bytes, match: str) -> str:
    """load_config's one-line message for a file holding ``text``, checked against ``match``."""
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(ConfigError, match=match) as error:
        load_config(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and len(message) < 400, message
    assert str(path) in message, message
    return message


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def laughs(levels: int, width: int = 10) -> str:
    """A "billion laughs" list under data.grades: ``width ** levels`` names through aliases."""
    lines = [f"    - &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"    - &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "data:\n  grades:\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Depth and aliases: refused while composing, before any Python object is built


def test_a_list_nested_20000_deep_is_refused_at_the_limit(tmp_path):
    message = refused(tmp_path, "data:\n  grades: " + nested(20_000) + "\n", "nests values more than 32 levels deep")
    assert message.endswith(": a run config is 3 levels deep (section, key, list of grades); flatten it")
    assert "at line 2" in message


def test_deep_block_mappings_are_refused_too(tmp_path):
    text = "".join(f"{'  ' * level}k{level}:\n" for level in range(40)) + "  " * 40 + "v\n"
    refused(tmp_path, text, "more than 32 levels deep")


def test_the_depth_limit_is_exact():
    assert parse_yaml(nested(MAX_DEPTH).encode(), "x.yaml") is not None
    with pytest.raises(ConfigError, match="more than 32 levels deep"):
        parse_yaml(nested(MAX_DEPTH + 1).encode(), "x.yaml")


def test_an_alias_counts_the_depth_of_what_it_names():
    # 20 levels named once, then used 20 levels down: 40 levels once expanded
    text = f"a: &deep {nested(20)}\nb: {'[' * 19}*deep{']' * 19}\n"
    with pytest.raises(ConfigError, match="more than 32 levels deep"):
        parse_yaml(text.encode(), "x.yaml")


def test_billion_laughs_under_grades_is_refused_before_it_expands(tmp_path):
    # The reported case: a TypeError traceback; expanded it would be 10**9 names.
    message = refused(tmp_path, laughs(9), r"holds more than 10,000 values \(aliases expanded\)")
    assert "at line 6" in message  # in the fourth list: its 11,111 values pass the limit


@pytest.mark.parametrize(
    "text",
    [
        # mappings instead of lists
        "a0: &a0 {x: 1, y: 2, z: 3, w: 4}\n"
        + "".join(f"a{i}: &a{i} {{x: *a{i - 1}, y: *a{i - 1}, z: *a{i - 1}, w: *a{i - 1}}}\n" for i in range(1, 12)),
        # merge keys: each level copies the pairs of the one before twice
        "a0: &a0 {x0: 1, y0: 2}\n"
        + "".join(f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], x{i}: 1}}\n" for i in range(1, 30)),
    ],
    ids=["mappings", "merge-keys"],
)
def test_other_alias_bombs_are_refused(text):
    with pytest.raises(ConfigError, match="aliases expanded"):
        parse_yaml(text.encode(), "x.yaml")


def test_a_few_aliases_are_fine():
    text = "base: &base {epochs: 3}\ncopy: *base\nmore: {<<: *base, lr: 0.1}\n"
    assert parse_yaml(text.encode(), "x.yaml") == {
        "base": {"epochs": 3},
        "copy": {"epochs": 3},
        "more": {"epochs": 3, "lr": 0.1},
    }
    assert len(parse_yaml(f"[{', '.join(['1'] * (MAX_NODES - 1))}]".encode(), "x.yaml")) == MAX_NODES - 1


def test_an_alias_inside_what_it_names_is_refused(tmp_path):
    refused(tmp_path, "data:\n  grades: &a [*a]\n", r"has the alias \*a inside the value it names: a config cannot")
    refused(tmp_path, "data: &d\n  grades: [2L]\n  more: *d\n", "inside the value it names")


# ---------------------------------------------------------------------------------------------
# Keys


@pytest.mark.parametrize(
    "text, kind",
    [("? [a, b]\n: 1\n", "a list"), ("? {a: 1}\n: 1\n", "a mapping"), ("x: &k [1]\ntrain:\n  ? *k\n  : 1\n", "a list")],
)
def test_a_list_or_mapping_as_a_key_is_refused(tmp_path, text, kind):
    refused(tmp_path, text, f"uses {kind} as a key: write each key as a plain name")


def test_a_number_as_a_key_is_an_unknown_key(tmp_path):
    refused(tmp_path, "train:\n  1: 2\n", r"unknown key 1 in .* section 'train': known keys")
    refused(tmp_path, "null: 1\n", "unknown key None")


def test_a_key_twice_is_refused_but_a_merge_may_be_overridden(tmp_path):
    refused(tmp_path, "train:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n", "at line 4 sets 'epochs' twice in one mapping")
    assert parse_yaml(b"x: &t {epochs: 2}\ntrain: {<<: *t, epochs: 5}\n", "x.yaml")["train"] == {"epochs": 5}


# ---------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize(
    "value, match",
    [
        ("9" * 100_000, r"has the integer 9{24}\.\.\. \(100000 digits\), over 64 bits: use a smaller number"),
        ("9" * 400, r"\(400 digits\), over 64 bits"),
        (str(2**64), "over 64 bits"),
        ("0x" + "f" * 17, "over 64 bits"),
        ("1" + ":59" * 30, "over 64 bits"),  # sexagesimal
    ],
)
def test_integers_past_64_bits_are_refused_unconverted(tmp_path, value, match):
    refused(tmp_path, f"train:\n  seed: {value}\n", match)


def test_64_bit_integers_are_read():
    assert parse_yaml(f"a: {2**63 - 1}\nb: -{2**63}\nc: 0x{'f' * 16}".encode(), "x.yaml") == {
        "a": 2**63 - 1,
        "b": -(2**63),
        "c": 2**64 - 1,
    }


@pytest.mark.parametrize("value", ["1e999", "-1.0e+999", ".inf", "-.Inf", ".nan", ".NaN"])
def test_numbers_that_are_not_finite_are_refused(tmp_path, value):
    refused(tmp_path, f"train:\n  lr: {value}\n", f"at line 2 has {re.escape(value)}, which is not a finite number")


def test_exponents_read_as_numbers_as_in_yaml_1_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  l2: 5E-5\nmodel:\n  sord_beta: 2e0\n")
    cfg = load_config(path)
    assert (cfg.train.lr, cfg.train.l2, cfg.model.setting("sord_beta")) == (0.001, 5e-5, 2.0)


def test_values_from_python_are_checked_the_same_way():
    with pytest.raises(ConfigError, match=r"train.l2 must be a finite number, got nan"):
        RunConfig.from_dict({"train": {"l2": float("nan")}})
    with pytest.raises(ConfigError, match=r"train.lr must be a finite number, got inf"):
        RunConfig.from_dict({"train": {"lr": 10**400}})  # float() of it raised OverflowError
    with pytest.raises(ConfigError, match=r"train.epochs has no value \(null\): give one"):
        RunConfig.from_dict({"train": {"epochs": None}})


# ---------------------------------------------------------------------------------------------
# Values of the wrong kind: the reported TypeError, and what YAML turns into booleans or dates


@pytest.mark.parametrize(
    "text, match",
    [
        ("data:\n  grades: [[2L, L], M]\n", r"data.grades must be a list of names, but holds \['2L', 'L'\]: write one"),
        ("data:\n  grades: [2L, true]\n", r"data.grades must be a list of names, but holds True \(YAML reads yes"),
        ("data:\n  cache: off\n", r"data.cache must be text, got False \(YAML reads yes, no, on, off"),
        ("data:\n  split: 5\n", r"data.split must be text, got 5: quote it"),
        ("model:\n  task: [corn]\n", r"model.task must be text, got \['corn'\]: write one name"),
        ("model:\n  loss: 3\n", r"model.loss must be text, got 3"),
        ("model:\n  settings: 5\n", r"model.settings must be a mapping of names to values, got 5"),
        ("train: false\n", r"section 'train' must be a mapping of keys, got False"),
        ("train:\n  epochs:\n", r"train.epochs has no value \(null\)"),
        ("train:\n  log_to: {a: 1}\n", r"train.log_to must be a list of names or a comma-separated string"),
        ("data:\n  split: 2020-13-45\n", r"has '2020-13-45', which is not a valid timestamp: fix the value, or quote"),
        ("data:\n  split: 2020-01-02\n", r"data.split must be text, got datetime.date\(2020, 1, 2\): quote it"),
        ("train:\n  epochs: !!int ten\n", r"at line 2 has 'ten', which is not a valid int"),
        ("train:\n  augment: !!bool maybe\n", r"has 'maybe', which is not a valid bool"),
        ("train:\n  seed: !!float x\n", r"has 'x', which is not a valid float"),
        ("x: !!binary 'a'\n", r"is not valid YAML at line 1: failed to decode base64 data"),
        ("x: !!python/object/apply:os.system [ls]\n", r"could not determine a constructor for the tag"),
    ],
)
def test_values_of_the_wrong_kind_are_one_line(tmp_path, text, match):
    refused(tmp_path, text, match)


def test_a_path_from_python_is_text(tmp_path):
    assert RunConfig.from_dict({"data": {"path": tmp_path}}).data.path == str(tmp_path)


def test_grades_may_be_numbers():
    assert RunConfig.from_dict({"data": {"grades": [0, 1, 2]}}).data.grades == ["0", "1", "2"]
    assert RunConfig.from_dict({"train": {"log_to": ["mlflow", "tensorboard"]}}).train.log_to == "tensorboard,mlflow"


# ---------------------------------------------------------------------------------------------
# The file itself


@pytest.mark.parametrize(
    "data, match",
    [
        (b"data:\n  path: caf\xe9\n", r"is not UTF-8 text \(byte 0xe9 at line 2\): save it as UTF-8"),
        (bytes(range(256)) * 4, r"is not UTF-8 text \(byte 0x80 at line 2\)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"is not UTF-8 text"),
        (b"train:\n  epochs: 3\x00\n", r"holds the character #x0000, which YAML does not allow: is it a YAML file\?"),
        (b"", r"is empty: write the sections to set \(data, model, train, calibrate\), or drop --config"),
        (b"# only a comment\n", r"is empty"),
        (b"- a\n- b\n", r"must be a mapping of sections .*, got a list: start each section with a line such as"),
        (b"just text\n", r"got text: start"),
        (
            b"train: {}\n---\ndata: {}\n",
            r"is not valid YAML at line 2: expected a single document in the stream but found another document; fix",
        ),
        (
            b"train: [1, 2\n",
            r"is not valid YAML at line 2: while parsing a flow sequence expected ',' or '\]', but got '<stream end>'; fix",
        ),
        (b"#" * (MAX_BYTES + 1), r"is over 256 KB, too large for a config: check it is the right file"),
    ],
    ids=["latin-1", "binary", "png", "nul", "empty", "comment", "list", "text", "two-documents", "syntax", "large"],
)
def test_files_that_are_not_configs(tmp_path, data, match):
    refused(tmp_path, data, match)


def test_a_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbftrain:\n  epochs: 3\n")
    assert load_config(path).train.epochs == 3


def finishes(call, seconds: float = 5.0):
    """``call()``'s ConfigError message, failing the test if it has not returned within ``seconds``."""
    outcome = []

    def run():
        try:
            call()
            outcome.append(None)
        except ConfigError as e:
            outcome.append(str(e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still reading after {seconds} s"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    message = finishes(lambda: load_config(fifo))
    assert message == f"config file {fifo} is a FIFO, device or socket, not a regular file: pass a YAML file"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_or_a_link_to_one_is_refused(tmp_path):
    link = tmp_path / "c.yaml"
    link.symlink_to("/dev/zero")
    assert "is a FIFO, device or socket" in finishes(lambda: load_config(link))


def test_a_folder_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"is a folder, not a regular file: pass a YAML file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"does not exist: check the --config path"):
        load_config(tmp_path / "nope.yaml")


def test_a_valid_config_still_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "# a run\ndata:\n  grades: [2L, L, M]\n  cache: 'off'\nmodel:\n  task: sord\n  sord_beta: 2\n"
        "train:\n  epochs: 3\n  lr: 0.01\n  log_to: [mlflow]\ncalibrate:\n  alpha: 0.2\n"
    )
    cfg = load_config(path)
    assert cfg.data.grades == ["2L", "L", "M"] and cfg.data.cache == "off" and cfg.train.log_to == "mlflow"
    assert (cfg.model.task, cfg.model.setting("sord_beta"), cfg.train.epochs, cfg.calibrate.alpha) == (
        "sord",
        2.0,
        3,
        0.2,
    )
