"""Fuzzed readers: the four readers of files from elsewhere, fed random, truncated and bit-flipped
files and pickles that call arbitrary globals.

Readers: the CUCUMBER-9 reader (folders and .tar.gz archives), its safe unpickler, image decoding
and the CSV manifest. For every input:

- only an ImgradeError comes out (or a result): no other exception;
- the error is one line and names the file (or its folder);
- nothing in the file runs (a hostile pickle would create a marker file);
- each input finishes within ``SECONDS_PER_INPUT`` (10 s; IMGRADE_FUZZ_SECONDS): a guard against
  hangs, not a speed goal.

Seeds are valid files written here (``cucumber9_writer``, Pillow); the mutations break them.
Default counts keep this file to seconds. ``IMGRADE_FUZZ_EXAMPLES=20000`` runs every test with
that many inputs; ``benchmarks/reliability.py`` does so and prints ``TALLY``, the outcome counts.
"""

from __future__ import annotations

import contextlib
import copyreg
import csv
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from fuzzing import SECONDS_PER_INPUT, fuzz, time_limit
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image, features

from imgrade.core.errors import DataError, ImgradeError
from imgrade.data import cucumber9
from imgrade.data.csv_manifest import read_csv_manifest
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.data.cucumber9_writer import write_cucumber9, write_tar_gz
from imgrade.data.images import decode_image
from imgrade.data.safe_pickle import safe_load_pickle

READERS = ("cucumber9", "unpickler", "images", "csv")
TALLY = {
    reader: {"inputs": 0, "imgrade_errors": 0, "accepted": 0, "unexpected": 0, "slowest_s": 0.0} for reader in READERS
}
"""Outcomes per reader over this process: what ``benchmarks/reliability.py`` prints."""

# Pillow warns about the damaged files it still opens (corrupt EXIF, tags past the end): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")

P1_NAMES = ["2L", "BM", "BL", "M", "S", "L", "2S", "BS", "C"]  # batches.meta of prototype 1, as published
P2_NAMES = ["OTHER", "2L", "L", "M", "S", "2S", "BD", "BC", "BS", "C"]


# ---------------------------------------------------------------------------------------------
# One input: run the reader, check the property, count the outcome


def attempt(reader: str, read: Callable[[], object], where: str, check: Callable[[object], None] = lambda result: None):
    """Run ``read()`` on one fuzzed input and count the outcome in ``TALLY[reader]``.

    Returns the result (after ``check(result)``) or the ImgradeError raised, which must be one line
    naming ``where``. Anything else (another exception, a hang, a failed check) counts as unexpected
    and fails the test.
    """
    tally = TALLY[reader]
    tally["inputs"] += 1
    start = time.perf_counter()
    try:
        try:
            with time_limit(SECONDS_PER_INPUT):
                result = read()
        except ImgradeError as error:
            message = str(error)
            assert len(message.splitlines()) == 1 and where in message, f"not one line naming {where}: {message!r}"
            tally["imgrade_errors"] += 1
            return error
        check(result)
        tally["accepted"] += 1
        return result
    except BaseException:
        tally["unexpected"] += 1
        raise
    finally:
        tally["slowest_s"] = max(tally["slowest_s"], time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Mutations of valid seed files

# Values that break length fields: the largest, negative or zero sizes in both byte orders.
BOUNDARY_BYTES = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xff\xff\xff\xff",
    b"\xff\xff\xff\x7f",
    b"\x7f\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
]
MUTATIONS = ["truncate", "flip", "overwrite", "insert", "delete", "splice", "random", "intact"]


@st.composite
def mutated(draw, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """(seed name, the seed broken one way): truncated, bits flipped, bytes overwritten, inserted
    or deleted, spliced with another seed, replaced by random bytes (after its magic half the time)
    or left intact."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = seeds[name]
    size = len(data)
    how = draw(st.sampled_from(MUTATIONS))
    at = draw(st.integers(0, size))
    chunk = draw(st.sampled_from(BOUNDARY_BYTES) | st.binary(min_size=1, max_size=32))
    if how == "truncate":
        data = data[: min(at, size - 1)]
    elif how == "flip":
        flipped = bytearray(data)
        for position, bit in draw(
            st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)), min_size=1, max_size=8)
        ):
            flipped[position] ^= 1 << bit
        data = bytes(flipped)
    elif how == "overwrite":
        data = data[:at] + chunk + data[at + len(chunk) :]
    elif how == "insert":
        data = data[:at] + chunk + data[at:]
    elif how == "delete":
        data = data[:at] + data[at + draw(st.integers(1, 64)) :]
    elif how == "splice":
        other = seeds[draw(st.sampled_from(sorted(seeds)))]
        data = data[:at] + other[draw(st.integers(0, len(other))) :]
    elif how == "random":
        data = data[: draw(st.sampled_from([0, 8]))] + draw(st.binary(max_size=2 * size))
    return name, data


def random_uint8(*shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# CUCUMBER-9 folders and archives


@cache
def cucumber9_seeds() -> dict[str, dict[str, bytes]]:
    """Small true-format sets, file name -> bytes: prototype 1 with a test batch, prototype 2 with OTHER."""
    with tempfile.TemporaryDirectory() as tmp:
        p1 = write_cucumber9(
            Path(tmp, "p1"),
            random_uint8(5, 4, 4, 3, seed=1),
            np.array([0, 1, 5, 8, 2]),
            P1_NAMES,
            num_batches=2,
            test_fraction=0.2,
        )
        p2 = write_cucumber9(
            Path(tmp, "p2"),
            random_uint8(4, 3, 4, 4, 3, seed=2),
            np.array([0, 1, 6, 9]),
            P2_NAMES,
            num_batches=2,
            prototype=2,
        )
        return {folder.name: {path.name: path.read_bytes() for path in sorted(folder.iterdir())} for folder in (p1, p2)}


@cache
def archive_seeds() -> dict[str, bytes]:
    """The prototype-1 seed packed as the published archive (.tar.gz), and plain or otherwise
    compressed, which the reader also opens whatever the file is called."""
    seeds = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "cucumber-9-python")
        folder.mkdir()
        for name, data in cucumber9_seeds()["p1"].items():
            (folder / name).write_bytes(data)
        seeds["tar.gz"] = write_tar_gz(folder, Path(tmp, "c.tar.gz")).read_bytes()
        for compression in ("", "bz2", "xz"):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
                for path in sorted(folder.iterdir()):
                    tar.add(path, arcname=f"{folder.name}/{path.name}")
            seeds[f"tar.{compression}".rstrip(".")] = buffer.getvalue()
    return seeds


def last_byte_flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def read_set(folder_or_archive: Path, view: str):
    """What every caller does: read the set and index into the images."""
    images = read_cucumber9(folder_or_archive, view=view)
    assert images.images.dtype == np.uint8 and len(images.images) == len(images.targets) == len(images.ids)
    return images


VIEW = st.sampled_from(["above", "above", "below", "all"])


@fuzz(300)
@given(st.sampled_from(["p1", "p2"]), st.data(), VIEW)
def test_cucumber9_folder_with_a_damaged_file(prototype, data, view):
    files = cucumber9_seeds()[prototype]
    name, damaged = data.draw(mutated(files), label="file")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "cucumber-9-python")
        folder.mkdir()
        for file, content in files.items():
            (folder / file).write_bytes(damaged if file == name else content)
        attempt("cucumber9", lambda: read_set(folder, view), str(folder))


@fuzz(150)
@given(mutated(archive_seeds()), VIEW)
@example(("tar.xz", last_byte_flipped(archive_seeds()["tar.xz"])), "above")  # lzma.LZMAError escaped
def test_cucumber9_damaged_archive(archive, view):
    _, damaged = archive
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "cucumber-9-python.tar.gz")
        path.write_bytes(damaged)
        attempt("cucumber9", lambda: read_set(path, view), str(path))


def test_an_archive_member_too_big_to_be_a_batch_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(cucumber9, "MAX_MEMBER_BYTES", 50)  # instead of writing a real 256 MB bomb
    path = tmp_path / "cucumber-9-python.tar.gz"
    path.write_bytes(archive_seeds()["tar.gz"])
    error = attempt("cucumber9", lambda: read_set(path, "above"), str(path))
    assert isinstance(error, DataError) and "over the 50 limit" in str(error)


@pytest.mark.parametrize("kind", ["fifo", "null", "socket"])
@pytest.mark.parametrize("name", sorted(cucumber9_seeds()["p1"]))
def test_cucumber9_folder_with_a_special_file(tmp_path, name, kind):
    """batches.meta or a batch that is a FIFO, a link to a device or a socket: refused in one line, not skipped."""
    folder = tmp_path / "cucumber-9-python"
    folder.mkdir()
    for file, content in cucumber9_seeds()["p1"].items():
        if file != name:
            (folder / file).write_bytes(content)
    make_special(folder / name, kind)
    error = attempt("cucumber9", lambda: read_set(folder, "above"), str(folder))
    assert isinstance(error, DataError) and "not a regular file" in str(error)


# Member names a crafted archive may hold: line breaks, traversal, absolute, duplicate, very long.
MEMBER_NAMES = st.sampled_from(
    [
        "cucumber-9-python/batches.meta",
        "cucumber-9-python/data_batch_1",
        "cucumber-9-python/test_batch",
        "batches.meta",
        "data_batch_1",
        "other/batches.meta",
        "../batches.meta",
        "/abs/data_batch_2",
        "line\nbreak/batches.meta",
        "line\nbreak/data_batch_1",
        "cucumber-9-python/data_batch_99999999999999999999",
        "x" * 300 + "/data_batch_1",
        "cucumber-9-python/\u2028/batches.meta",
    ]
) | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20).map(
    lambda text: f"{text}/data_batch_1"
)
MEMBER_KINDS = st.sampled_from(["file", "file", "file", "dir", "symlink", "hardlink"])


@fuzz(100)
@given(st.lists(st.tuples(MEMBER_NAMES, MEMBER_KINDS, st.sampled_from(sorted(cucumber9_seeds()["p1"]))), max_size=6))
def test_cucumber9_archive_with_crafted_members(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content_of in members:
            info = tarfile.TarInfo(name)
            content = cucumber9_seeds()["p1"][content_of]
            if kind == "file":
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "c.tar.gz")
        path.write_bytes(buffer.getvalue())
        attempt("cucumber9", lambda: read_set(path, "above"), str(path))


# ---------------------------------------------------------------------------------------------
# The safe unpickler: random bytes, opcode soup, and pickles that call arbitrary globals


MARKER_FOLDER = tempfile.TemporaryDirectory(prefix="imgrade-fuzz-")
"""Where a gadget below that ran would leave a file: it must stay empty."""
MARKER = str(Path(MARKER_FOLDER.name, "RAN"))


def nothing_ran() -> bool:
    return not any(Path(MARKER_FOLDER.name).iterdir())


SOURCE = f"open({MARKER!r}, 'w').close()"
# (module, name, arguments): called by an unpickler, each creates a file in MARKER_FOLDER ...
RUNNING_GADGETS = [
    ("os", "system", (f"touch {MARKER}",)),
    ("posix", "system", (f"touch {MARKER}",)),
    ("subprocess", "check_call", (["touch", MARKER],)),
    ("builtins", "eval", (SOURCE,)),
    ("builtins", "exec", (SOURCE,)),
    ("__builtin__", "eval", (SOURCE,)),  # Python 2's name, which plain unpicklers map to builtins
    ("builtins", "open", (MARKER, "w")),
    ("io", "open", (MARKER, "w")),
    ("codecs", "open", (MARKER, "w")),
    ("os", "mkdir", (MARKER,)),
    ("shutil", "copyfile", (os.devnull, MARKER)),
    ("numpy", "save", (MARKER, [1, 2])),  # numpy, but outside the allow-list
    ("numpy", "savetxt", (MARKER, [1, 2])),
    ("numpy.testing._private.utils", "runstring", (SOURCE, {})),
]
# ... and these are other globals outside the allow-list, among them what numpy 2's own pickles name.
GADGETS = RUNNING_GADGETS + [
    ("subprocess", "Popen", (["touch", MARKER],)),
    ("numpy.core.multiarray", "scalar", (MARKER,)),
    ("numpy._core.numeric", "_frombuffer", (MARKER,)),
    ("_codecs", "encode", (MARKER, "latin1")),
    ("copyreg", "_reconstructor", (MARKER,)),
    ("pickle", "loads", (MARKER,)),
    ("imgrade.data.cucumber9", "safe_load_pickle", (MARKER, MARKER)),
]


def push(value, protocol: int) -> bytes:
    """Opcodes that push ``value`` (str, int, list, tuple or dict of those) in ``protocol``."""
    if isinstance(value, str):
        if protocol == 0:
            return b"V" + value.encode("raw-unicode-escape") + b"\n"
        raw = value.encode("utf-8", "surrogatepass")
        return b"X" + struct.pack("<I", len(raw)) + raw
    if isinstance(value, int):
        return b"I%d\n" % value
    if isinstance(value, list):
        return b"(" + b"".join(push(item, protocol) for item in value) + b"l"
    if isinstance(value, tuple):
        return b"(" + b"".join(push(item, protocol) for item in value) + b"t"
    if isinstance(value, dict):
        return b"(d" + b"".join(push(k, protocol) + push(v, protocol) + b"s" for k, v in value.items())
    raise TypeError(type(value))


EXTENSION_CODE = 0xF3


@contextlib.contextmanager
def registered_extension(module: str, name: str):
    """copyreg's extension code EXTENSION_CODE names ``module.name`` within the block."""
    copyreg.add_extension(module, name, EXTENSION_CODE)
    try:
        yield
    finally:
        copyreg.remove_extension(module, name, EXTENSION_CODE)


def hostile_pickle(module: str, name: str, args: tuple, protocol: int, reference: str, call: str, wrap: str) -> bytes:
    """A well-formed pickle that reaches ``module.name`` one way and calls it another."""
    if reference == "GLOBAL":
        callable_ = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    elif reference == "STACK_GLOBAL":
        callable_ = push(module, protocol) + push(name, protocol) + b"\x93"
    else:  # EXT1
        callable_ = b"\x82" + bytes([EXTENSION_CODE])
    if reference == "INST":  # INST finds the global and calls it at once
        gadget = (
            b"(" + b"".join(push(a, protocol) for a in args) + b"i" + module.encode() + b"\n" + name.encode() + b"\n"
        )
    elif call == "REDUCE":
        gadget = callable_ + push(args, protocol) + b"R"
    elif call == "OBJ":
        gadget = b"(" + callable_ + b"".join(push(a, protocol) for a in args) + b"o"
    elif call == "NEWOBJ":
        gadget = callable_ + push(args, protocol) + b"\x81"
    elif call == "NEWOBJ_EX":
        gadget = callable_ + push(args, protocol) + b"(d\x92"
    elif call == "BUILD":  # the global as the state a dict is built from
        gadget = b"(d" + callable_ + b"b"
    else:  # named only, as a value
        gadget = callable_
    if wrap == "batch":
        body = push({"labels": []}, protocol) + push("data", protocol) + gadget + b"s"
    elif wrap == "nested":
        body = b"((" + gadget + b"ll"
    elif wrap == "memo":
        body = gadget + b"p0\n0g0\n"
    else:
        body = gadget
    body += b"."
    if protocol >= 4:
        body = b"\x95" + struct.pack("<Q", len(body)) + body
    return (b"\x80" + bytes([protocol]) if protocol >= 2 else b"") + body


PICKLE_WAYS = {
    "protocol": st.integers(0, 5),
    "reference": st.sampled_from(["GLOBAL", "STACK_GLOBAL", "INST", "EXT1"]),
    "call": st.sampled_from(["REDUCE", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD", "none"]),
    "wrap": st.sampled_from(["batch", "nested", "memo", "bare"]),
}


@pytest.mark.parametrize("gadget", RUNNING_GADGETS, ids=lambda gadget: f"{gadget[0]}.{gadget[1]}")
def test_the_gadgets_do_run_when_pickle_loads_them(gadget):
    # The check below that nothing ran means something only if these really run under plain pickle.
    data = hostile_pickle(*gadget, protocol=2, reference="GLOBAL", call="REDUCE", wrap="bare")
    try:
        pickle.loads(data)
        assert not nothing_ran()
    finally:
        for path in Path(MARKER_FOLDER.name).iterdir():
            path.rmdir() if path.is_dir() else path.unlink()


@fuzz(400)
@given(gadget=st.sampled_from(GADGETS), **PICKLE_WAYS)
def test_unpickler_refuses_every_global_that_could_run_code(gadget, protocol, reference, call, wrap):
    module, name, args = gadget
    data = hostile_pickle(module, name, args, protocol, reference, call, wrap)
    with registered_extension(module, name) if reference == "EXT1" else contextlib.nullcontext():
        error = attempt("unpickler", lambda: safe_load_pickle(data, "data_batch_1"), "data_batch_1")
    assert isinstance(error, DataError) and "refusing to unpickle" in str(error), error
    assert nothing_ran(), f"{module}.{name} ran"


# Pieces a stream of opcodes is made of: the allowed numpy globals, hostile ones, and what calls them.
OPCODE_PIECES = [
    b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cnumpy._core.multiarray\n_reconstruct\n",
    b"cnumpy\nndarray\n",
    b"cnumpy\ndtype\n",
    b"cos\nsystem\n",
    b"cbuiltins\neval\n",
    b"cnumpy\nsave\n",
    b"U\x01b",
    b"U\x02u1",
    b"U\x02O8",
    b"U\x02V8",
    b"U\x02<i8",
    b"U\x03f8,",
    b"U\x01|",
    b"U\x04data",
    b"U\x06labels",
    b"U\x0blabel_names",
    b"U\x02S3",
    b"C\x02\x00\x00",
    b"T\x04\x00\x00\x00\x01\x02\x03\x04",
    b"K\x00",
    b"K\x01",
    b"K\x03",
    b"J\xff\xff\xff\xff",
    b"J\xff\xff\xff\x7f",
    b"M\x00\x04",
    b"I1\n",
    b"L99999999999999999999\n",
    b"\x88",
    b"\x89",
    b"N",
    b"(",
    b")",
    b"]",
    b"}",
    b"t",
    b"l",
    b"d",
    b"e",
    b"u",
    b"a",
    b"s",
    b"\x85",
    b"\x86",
    b"\x87",
    b"R",
    b"b",
    b"o",
    b"\x81",
    b"\x92",
    b"\x93",
    b"0",
    b"1",
    b"2",
    b"q\x00",
    b"h\x00",
    b"r\xff\xff\xff\x7f",
    b"p99999999\n",
    b"j\xff\xff\xff\x7f",
    b"\x94",
    b"\x95\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x80\x02",
    b"\x80\x05",
    b"\x80\x09",
    b"\x82\xf3",
    b"Q",
    b"P0\n",
    b"\x8a\x08" + b"\xff" * 8,
    b"\x8b\xff\xff\xff\x7f",
    b".",
    b"V" + f"touch {MARKER}".encode() + b"\n",
    b"V" + SOURCE.encode() + b"\n",
]
# numpy's reduction of a uint8 array, whole: the soup then mutates a valid object
ARRAY_PICKLE = (
    b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01K\x02K\x02\x86"
    b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x04abcdtb"
)


@fuzz(400)
@given(
    st.binary(max_size=200)
    | st.lists(st.sampled_from([*OPCODE_PIECES, ARRAY_PICKLE]), max_size=40).map(b"".join)
    | mutated(cucumber9_seeds()["p2"]).map(lambda named: named[1])
)
@example(b"\x80\x02}r\x00\x00\x00\x01.")  # memo index 2**24: the C unpickler zeroed 256 MB for it (2**31: 32 GB)
@example(b"\x80\x04\x8c\x08os\nevil\n\x94\x8c\x06system\x94\x93.")  # a line break in the refused name
@example(b"\x80\x02cnumpy\nndarray\nJ\x00\xe1\xf5\x05\x85cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R\x86R.")  # 800 MB of None
def test_unpickler_on_random_bytes_and_opcode_soup(data):
    attempt("unpickler", lambda: safe_load_pickle(data, "data_batch_1"), "data_batch_1")
    assert nothing_ran()


ARRAY_HEAD = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"


@pytest.mark.parametrize(
    "data",
    [
        # an object dtype: numpy's ndarray.__setstate__ read past the short list and segfaulted
        ARRAY_HEAD + b"(K\x01J\x01\x00\x00\x00\x85cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R\x89]tb.",
        # uint8 whose BUILD state sets object flags (63): numpy then treated the bytes as objects
        ARRAY_HEAD + b"(K\x01K\x04\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
        b"J\xff\xff\xff\xffK?tb\x89U\x04abcdtb.",
    ],
    ids=["object-dtype", "object-flags-on-uint8"],
)
def test_unpickler_refuses_arrays_that_crashed_numpy(data):
    # In a subprocess, so that a regression fails cleanly instead of killing the test run.
    code = (
        "import sys; from imgrade.data.safe_pickle import safe_load_pickle\n"
        "try: safe_load_pickle(sys.stdin.buffer.read(), 'data_batch_1')\n"
        "except ValueError as e: print(type(e).__name__, e)"
    )
    done = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()[-500:]
    assert done.stdout.decode().startswith("DataError data_batch_1"), done.stdout


def deep_list(depth: int) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)


@pytest.mark.parametrize(
    "meta, batch",
    [
        (b"\x80\x02}(U\x0blabel_names](" + deep_list(50_000) + b"eu.", None),  # str() of it raised RecursionError
        (b"\x80\x02}(" + b")" + b"\x85" * 50_000 + b"N" + b"u.", None),  # a key nested too deep to print
        (None, b"\x80\x02}(U\x06labels" + deep_list(50_000) + b"U\x04dataK\x00u."),  # numpy refuses it: keep it so
        (
            None,
            b"\x80\x02cnumpy\ndtype\nU\x02u2K\x00K\x00\x87R(K\x03U\x01>NNNK\x02K\x02K\x00tb.",
        ),  # BUILD on numpy's uint16
    ],
    ids=["deep-label-names", "deep-key", "deep-labels", "shared-dtype"],
)
def test_crafted_structures_in_a_cucumber9_folder(tmp_path, meta, batch):
    files = dict(cucumber9_seeds()["p1"])
    files["batches.meta"] = meta or files["batches.meta"]
    files["data_batch_1"] = batch or files["data_batch_1"]
    folder = tmp_path / "cucumber-9-python"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    error = attempt("cucumber9", lambda: read_set(folder, "above"), str(folder))
    assert isinstance(error, DataError)
    assert np.dtype("u2").byteorder == "=", "a file changed numpy's own uint16"


# ---------------------------------------------------------------------------------------------
# Image decoding


@cache
def image_seeds() -> dict[str, bytes]:
    """Small images of every format and mode the readers meet, format.mode -> bytes."""
    rgb = random_uint8(5, 7, 3, seed=3)
    images = {
        "RGB": Image.fromarray(rgb),
        "L": Image.fromarray(rgb[..., 0]),
        "RGBA": Image.fromarray(random_uint8(5, 7, 4, seed=4)),
        "P": Image.fromarray(rgb).quantize(8),
        "1": Image.fromarray(rgb[..., 0]).convert("1"),
        "I;16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "F": Image.fromarray(rgb[..., 0].astype(np.float32) / 255),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "LA": Image.fromarray(random_uint8(5, 7, 4, seed=4)).convert("LA"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    recipes = [
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "L", {}),
        ("PNG", "LA", {}),
        ("PNG", "1", {}),
        ("PNG", "I;16", {}),
        ("PNG", "P", {"transparency": 0}),
        ("JPEG", "RGB", {"exif": exif.tobytes()}),
        ("JPEG", "L", {"progressive": True}),
        ("JPEG", "CMYK", {}),
        ("GIF", "P", {}),
        ("GIF", "L", {"save_all": True, "append_images": [images["P"]]}),
        ("TIFF", "RGB", {}),
        ("TIFF", "L", {"compression": "tiff_lzw"}),
        ("TIFF", "I;16", {"compression": "tiff_adobe_deflate"}),
        ("TIFF", "F", {}),
        ("TIFF", "CMYK", {"compression": "packbits"}),
        ("TIFF", "1", {"compression": "group4"}),
        ("BMP", "RGB", {}),
        ("BMP", "P", {}),
        ("BMP", "1", {}),
        ("BMP", "L", {}),
    ]
    if features.check("webp"):
        recipes += [("WEBP", "RGB", {"quality": 50}), ("WEBP", "RGBA", {"lossless": True})]
    seeds = {}
    for format, mode, options in recipes:
        buffer = io.BytesIO()
        images[mode].save(buffer, format=format, **options)
        seeds[f"{format}.{mode}"] = buffer.getvalue()
    return seeds


def eight_by_eight_rgb(pixels) -> None:
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8


@fuzz(600)
@given(mutated(image_seeds()))
def test_decode_image_on_damaged_files(image):
    format, data = image
    name = f"photo.{format.split('.')[0].lower()}"
    attempt("images", lambda: decode_image(data, name, 8), name, eight_by_eight_rgb)


# ---------------------------------------------------------------------------------------------
# CSV manifests

IMAGE_FILES = {"a.png": "PNG.RGB", "b.jpg": "JPEG.RGB", "sub/c.bmp": "BMP.P", "d.gif": "GIF.P", "e.tif": "TIFF.I;16"}

CSV_SEEDS = {
    "ordinal": "path,target,split\na.png,0,train\nb.jpg,2,val\nsub/c.bmp,1,test\nd.gif,2,\ne.tif,0,train\n",
    "names": '\ufeffPath,Target,notes\r\na.png,2L,x\r\n"b.jpg","L","a, b"\r\nsub/c.bmp,M,\r\n\r\n',
    "continuous": "target,path\n0.5,a.png\n1e-3,b.jpg\n-7.25,d.gif\n",
}


def write_image_folder(folder: Path, damaged: tuple[str, bytes] | None = None) -> None:
    """The images the CSV seeds name, one of them replaced by ``damaged`` (file name, bytes), and
    SPECIAL_FILES, which a row may name."""
    for file, seed in IMAGE_FILES.items():
        path = folder / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_seeds()[seed])
    if damaged is not None:
        (folder / damaged[0]).write_bytes(damaged[1])
    for name, kind in SPECIAL_FILES.items():
        make_special(folder / name, kind)


# Entries named like photos that are not regular files: reading must refuse them, not block on the
# FIFO. (A link to /dev/zero is left to tests/unit/test_regular_files.py, which also caps the
# memory a reader that read it without end would take.)
SPECIAL_FILES = {"fifo.png": "fifo", "null.png": "null", "socket.png": "socket"}


def make_special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "null":
        path.symlink_to(os.devnull)
    else:
        with contextlib.chdir(path.parent), socket.socket(socket.AF_UNIX) as unix:  # sun_path holds ~100 bytes
            unix.bind(path.name)


def read_manifest(path: Path, grade_order, continuous):
    continuous = None if grade_order is not None else continuous  # both at once is a usage error, not the file's
    images = read_csv_manifest(path, 8, grade_order=grade_order, continuous=continuous)
    assert images.images.shape[1:] == (8, 8, 3) and len(images.images) == len(images.targets)
    return images


GRADE_ORDERS = st.sampled_from([None, None, ["2L", "L", "M"], ["0", "1", "2"]])
CONTINUOUS = st.sampled_from([None, None, False, True])


@fuzz(250)
@given(mutated({name: text.encode() for name, text in CSV_SEEDS.items()}), GRADE_ORDERS, CONTINUOUS)
def test_csv_manifest_damaged_text(manifest, grade_order, continuous):
    _, data = manifest
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_image_folder(folder)
        path = folder / "set.csv"
        path.write_bytes(data)
        attempt("csv", lambda: read_manifest(path, grade_order, continuous), str(folder))


# Cells a user (or a broken export) can put in a manifest.
PATH_CELLS = st.sampled_from(
    [
        *IMAGE_FILES,
        *SPECIAL_FILES,
        "",
        "missing.png",
        "sub",
        "set.csv",
        "a.png\x00",
        "../a.png",
        "/",
        "x" * 5000 + ".png",
        "sub/../a.png",
        "A.PNG",
    ]
) | st.text(max_size=12)
TARGET_CELLS = (
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "-1",
            "2L",
            "L",
            "M",
            "nan",
            "inf",
            "-inf",
            "1e18",
            "1e300",
            "1.5",
            "0x10",
            "1_000",
            "",
            " 2 ",
            "٣",
        ]
    )
    | st.text(max_size=8)
    | st.integers(-(10**20), 10**20).map(str)
    | st.floats(allow_nan=True).map(repr)
)
SPLIT_CELLS = st.sampled_from(["", "train", "val", "test", "TEST", "valid"])


@fuzz(250)
@given(
    rows=st.lists(st.tuples(PATH_CELLS, TARGET_CELLS, SPLIT_CELLS), min_size=0, max_size=6),
    damaged=st.none() | mutated({file: image_seeds()[seed] for file, seed in IMAGE_FILES.items()}),
    grade_order=GRADE_ORDERS,
    continuous=CONTINUOUS,
)
@example(
    rows=[("x" * 5000 + ".png", "1", "")], damaged=None, grade_order=None, continuous=None
)  # OSError: name too long
@example(rows=[("a\nb.png", "1", "")], damaged=None, grade_order=None, continuous=None)  # the message took two lines
@example(
    rows=[("c\u2028d.png", "1", "")], damaged=("c\u2028d.png", b"\x89PNG"), grade_order=None, continuous=None
)  # so did decoding's
@example(
    rows=[("a.png", "0", ""), ("b.jpg", "1e9", "")], damaged=None, grade_order=None, continuous=None
)  # a billion grade names
@example(rows=[("a.png", "1e300", "")], damaged=None, grade_order=None, continuous=False)  # OverflowError
@example(rows=[("a.png", "1e39", "")], damaged=None, grade_order=None, continuous=True)  # became inf in float32
@example(rows=[("a.png", "0", ""), ("fifo.png", "1", "")], damaged=None, grade_order=None, continuous=None)
@example(rows=[("null.png", "0", "")], damaged=None, grade_order=None, continuous=None)
@example(rows=[("socket.png", "0", "")], damaged=None, grade_order=None, continuous=None)
def test_csv_manifest_rows(rows, damaged, grade_order, continuous):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_image_folder(folder, damaged)
        path = folder / "set.csv"
        with open(path, "w", newline="", encoding="utf-8", errors="surrogatepass") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "target", "split"])
            writer.writerows(rows)
        attempt("csv", lambda: read_manifest(path, grade_order, continuous), str(folder))


# What benchmarks/reliability.py runs for each reader.
FUZZ_TESTS = {
    "cucumber9": [
        test_cucumber9_folder_with_a_damaged_file,
        test_cucumber9_damaged_archive,
        test_cucumber9_archive_with_crafted_members,
    ],
    "unpickler": [
        test_unpickler_refuses_every_global_that_could_run_code,
        test_unpickler_on_random_bytes_and_opcode_soup,
    ],
    "images": [test_decode_image_on_damaged_files],
    "csv": [test_csv_manifest_damaged_text, test_csv_manifest_rows],
}
