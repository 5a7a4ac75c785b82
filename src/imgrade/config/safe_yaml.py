"""Reading YAML a user wrote, within bounds: plain data, never executed, never exploding.

``read_yaml`` opens only a regular file (``imgrade.core.io.open_regular_file``: a FIFO or a device
would block or never end), at most
``MAX_BYTES`` of UTF-8 text. Its loader is PyYAML's safe one with limits checked while the
document is composed, before any Python object is built: nesting at most ``MAX_DEPTH`` levels
(deeper would recurse past Python's stack), at most ``MAX_NODES`` values with every alias
expanded (a "billion laughs" file names each anchor ten times, ten levels deep), no alias inside
the node it names (a structure that contains itself), no key twice in one mapping. Scalars are
checked as they are built: integers within 64 bits (Python refuses to convert longer digit
strings), finite floats, dates that exist, explicit tags that fit their values. It also reads
``1e-3`` as a number, as YAML 1.2 does (YAML 1.1 made it text). Anything refused is one
ConfigError naming the file, the line, and the fix.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from imgrade.core.errors import ConfigError, DataError
from imgrade.core.io import open_regular_file

MAX_BYTES = 256 * 1024
"""Largest file read: a run's config is about 2 KB."""
MAX_DEPTH = 32
"""Deepest nesting: a run's config is 3 levels deep (section, key, list of grades)."""
MAX_NODES = 10_000
"""Most values (scalars, lists and mappings, aliases expanded) in one file: a config has about 100."""
MAX_INT_BITS = 64

_FLOAT_1_2 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
"""Exponents without a dot or a sign (1e-3, 2E5), floats in YAML 1.2 but text in YAML 1.1."""
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """A document over a limit: the problem and where, with the fix; becomes the ConfigError."""

    def __init__(self, problem: str, mark, fix: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


def _short(text: str, limit: int = 40) -> str:
    """``text`` whole if short, else its start and its length, on one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with the limits above, checked as the document is composed and built."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0  # of the node being composed
        self._values = 0  # values composed so far, aliases expanded
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values in it, aliases expanded; its height)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                if id(node) not in self._sizes:
                    raise _Refused(
                        f"has the alias *{_short(event.anchor)} inside the value it names",
                        event.start_mark,
                        "a config cannot contain itself; write the values out",
                    )
                values, height = self._sizes[id(node)]
                self._count(values, self._depth + height, event.start_mark)
            return super().compose_node(parent, index)  # also refuses an undefined alias
        start = self.peek_event().start_mark
        self._depth += 1
        self._count(1, self._depth, start)
        before = self._values
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
            _check_keys(node)
        else:
            children = []
        height = 1 + max((self._sizes[id(child)][1] for child in children), default=0)
        self._sizes[id(node)] = (self._values - before + 1, height)
        return node

    def _count(self, values: int, depth: int, mark) -> None:
        self._values += values
        if depth > MAX_DEPTH:
            raise _Refused(
                f"nests values more than {MAX_DEPTH} levels deep",
                mark,
                "a run config is 3 levels deep (section, key, list of grades); flatten it",
            )
        if self._values > MAX_NODES:
            raise _Refused(
                f"holds more than {MAX_NODES:,} values (aliases expanded)",
                mark,
                "write a config of sections and their keys, without aliases that repeat large values",
            )

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, LookupError, AttributeError, OverflowError):
            # an explicit tag that does not fit its value (!!int abc, !!bool maybe, !!timestamp x)
            value = node.value if isinstance(node, ScalarNode) else node.id
            raise _Refused(
                f"has {_short(value)!r}, which is not a valid {node.tag.rsplit(':', 1)[-1]}",
                node.start_mark,
                "fix the value, or quote it (without a !!tag) to keep it as text",
            ) from None

    def construct_yaml_int(self, node):
        digits = self.construct_scalar(node).replace("_", "").lstrip("+-")
        # 0b and 64 binary digits is the longest 64-bit integer: longer is refused before int() sees it
        if len(digits) <= MAX_INT_BITS + 2:
            value = super().construct_yaml_int(node)
            if value.bit_length() <= MAX_INT_BITS:
                return value
        shown = digits if len(digits) <= 24 else f"{digits[:24]}... ({len(digits)} digits)"
        raise _Refused(f"has the integer {shown}, over 64 bits", node.start_mark, "use a smaller number")

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(
                f"has {_short(node.value)}, which is not a finite number", node.start_mark, "write a finite number"
            )
        return value


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)
BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789"))


def _check_keys(node: MappingNode) -> None:
    """Each key is text or a number (not a list or mapping) and appears once."""
    seen = set()
    for key, _ in node.value:
        if not isinstance(key, ScalarNode):
            kind = "a list" if isinstance(key, SequenceNode) else "a mapping"
            raise _Refused(f"uses {kind} as a key", key.start_mark, "write each key as a plain name")
        if key.tag != _MERGE:
            if (key.tag, key.value) in seen:
                raise _Refused(f"sets {_short(key.value)!r} twice in one mapping", key.start_mark, "keep one of them")
            seen.add((key.tag, key.value))


def parse_yaml(data: bytes, name: str) -> Any:
    """The plain data in one YAML document of UTF-8 ``data`` (None if it holds none).

    Raises:
        ConfigError: the text is not UTF-8, not YAML, or over the limits above; the message names
            ``name`` and the line.

    >>> parse_yaml(b"train: {epochs: 3, lr: 1e-3}", "run.yaml")
    {'train': {'epochs': 3, 'lr': 0.001}}
    >>> parse_yaml(b"a: &x [1, 2]\\nb: *x\\nc: *c", "run.yaml")
    Traceback (most recent call last):
    ...
    imgrade.core.errors.ConfigError: run.yaml is not valid YAML at line 3: found undefined alias 'c'; fix the syntax
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{name} is not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}): save it as UTF-8"
        ) from None
    loader = None
    try:
        loader = BoundedLoader(text)  # checks the characters at once
        return loader.get_single_data()
    except _Refused as e:
        raise ConfigError(f"{name}{_at(e.problem_mark)} {e.problem}: {e.fix}") from None
    except yaml.reader.ReaderError as e:
        raise ConfigError(
            f"{name} holds the character #x{e.character:04x}, which YAML does not allow: is it a YAML file?"
        ) from None
    except yaml.MarkedYAMLError as e:
        problem = " ".join(" ".join(part for part in (e.context, e.problem) if part).split())
        raise ConfigError(f"{name} is not valid YAML{_at(e.problem_mark)}: {problem}; fix the syntax") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{name} is not valid YAML ({' '.join(str(e).split())}): fix the syntax") from None
    finally:
        if loader is not None:
            loader.dispose()


def _at(mark) -> str:
    return f" at line {mark.line + 1}" if mark is not None else ""


def read_yaml(path: str | Path, missing_fix: str = "check the path") -> Any:
    """The plain data in the YAML file ``path``: a regular file of at most ``MAX_BYTES``.

    Raises:
        ConfigError: no such file (the message ends with ``missing_fix``), not a regular file,
            too large, unreadable, or refused by :func:`parse_yaml`.
    """
    path = Path(path)
    try:
        with open_regular_file(path, f"config file {path}", max_bytes=None) as file:  # never a FIFO or a device
            data = file.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: {missing_fix}") from None
    except DataError:
        kind = "a folder" if path.is_dir() else "a FIFO, device or socket"
        raise ConfigError(f"config file {path} is {kind}, not a regular file: pass a YAML file") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror}): check it and its permissions") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"config file {path} is over {MAX_BYTES // 1024} KB, too large for a config: check it is the right file"
        )
    return parse_yaml(data, f"config file {path}")
