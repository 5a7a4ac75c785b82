"""Only regular files are read: a FIFO, a link to a device or a socket with an image's (or a batch
file's, or a CSV's) name is refused at once, in one line naming it, by every reader; nothing blocks.

Each case runs ``within`` a limit (tests/conftest.py): a reader that blocked on the FIFO or read
/dev/zero without end would fail there instead of hanging the suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrade.batch import read_paths
from imgrade.core import io as core_io
from imgrade.core.errors import DataError
from imgrade.core.io import read_regular_file
from imgrade.data.csv_manifest import read_csv_manifest
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.data.cucumber9_writer import write_cucumber9
from imgrade.data.folders import read_class_folders
from imgrade.data.images import list_images, load_image, stored_size
from imgrade.data.loader import detect_format

LIMIT_S = 5
"""A guard against a reader that blocks, far above the milliseconds a refusal takes."""
P1_NAMES = ["2L", "BM", "BL", "M", "S", "L", "2S", "BS", "C"]


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (0, 200, 0)).save(path)
    return path


def refusal(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert len(message.splitlines()) == 1, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert "not a regular file" in message and "put the file itself there, or remove it" in message
    return message


def test_each_reader_of_one_file_refuses_it_at_once(tmp_path, special_kind, special_file, within):
    kind, called = special_kind
    path = special_file(tmp_path / "x.png", kind)
    for read in (lambda p: read_regular_file(p, str(p)), lambda p: load_image(p, 32), stored_size):
        with within(LIMIT_S), pytest.raises(DataError) as excinfo:
            read(path)
        refusal(excinfo, f"{path} is {called}")


def test_a_link_to_a_regular_file_is_read(tmp_path):
    photo = write_image(tmp_path / "photo.png")
    (tmp_path / "link.png").symlink_to(photo)
    assert read_regular_file(tmp_path / "link.png", "link.png") == photo.read_bytes()
    np.testing.assert_array_equal(load_image(tmp_path / "link.png", 8), load_image(photo, 8))
    assert stored_size(tmp_path / "link.png") == (8, 8)


def test_a_file_over_the_size_limit_is_refused_unread_naming_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(b"x" * 101)
    with pytest.raises(DataError) as excinfo:
        read_regular_file(path, "big.png", max_bytes=100)
    assert str(excinfo.value).startswith("big.png is 101 bytes, over the 100-byte limit for one input file")
    assert read_regular_file(path, "big.png", max_bytes=None) == b"x" * 101
    monkeypatch.setattr(core_io, "MAX_FILE_BYTES", 100)  # load_image's limit, without writing 256 MiB
    monkeypatch.setattr(read_regular_file, "__defaults__", (100,))
    with pytest.raises(DataError, match="over the 100-byte limit"):
        load_image(path, 8)


def test_a_fifo_put_there_after_the_type_check_is_refused_without_blocking(tmp_path, special_file, monkeypatch, within):
    fifo = special_file(tmp_path / "x.png", "fifo")
    regular = os.stat(write_image(tmp_path / "photo.png"))
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: regular if Path(path) == fifo else real_stat(path, *a, **k))
    # the stat (patched) says regular; the open does not wait for a writer and fstat sees the FIFO
    with within(LIMIT_S), pytest.raises(DataError) as excinfo:
        read_regular_file(fifo, "x.png")
    refusal(excinfo, "x.png is a FIFO (named pipe)")


def test_a_file_that_grows_while_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "growing.png"
    path.write_bytes(b"0123456789")
    real_fstat = os.fstat

    def smaller(fd):  # as if 4 bytes were appended between the fstat and the read
        found = real_fstat(fd)
        return os.stat_result((*found[:6], found.st_size - 4, *found[7:]))

    monkeypatch.setattr(os, "fstat", smaller)
    with pytest.raises(DataError, match=r"growing.png grew while it was read \(more than the 6 bytes"):
        read_regular_file(path, "growing.png")


def test_listing_keeps_special_entries_for_predict_and_refuses_them_for_training(
    tmp_path, special_kind, special_file, within
):
    kind, called = special_kind
    write_image(tmp_path / "photos" / "a.png")
    path = special_file(tmp_path / "photos" / "b.png", kind)
    with within(LIMIT_S):
        assert list_images(tmp_path / "photos") == [tmp_path / "photos" / "a.png", path]
        assert list_images(path) == [path]  # given by name: predict makes an error row of it
        with pytest.raises(DataError) as excinfo:
            list_images(tmp_path / "photos", regular_only=True)
    refusal(excinfo, f"{path} is {called}")


def test_class_folders_with_a_special_entry_fail_before_decoding(tmp_path, special_kind, special_file, within):
    kind, called = special_kind
    for grade in ("good", "bad"):
        write_image(tmp_path / "set" / grade / "a.png")
    path = special_file(tmp_path / "set" / "bad" / "b.jpg", kind)
    with within(LIMIT_S), pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path / "set", 8, grade_order=["good", "bad"])
    refusal(excinfo, f"{path} is {called}")


def test_a_grades_file_that_is_special_is_refused_not_ignored(tmp_path, special_kind, special_file, within):
    kind, called = special_kind
    for grade in ("good", "bad"):
        write_image(tmp_path / "set" / grade / "a.png")
    path = special_file(tmp_path / "set" / "grades.txt", kind)
    with within(LIMIT_S), pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path / "set", 8)
    refusal(excinfo, f"{path} is {called}")


def test_a_csv_row_naming_a_special_file_names_the_row(tmp_path, special_kind, special_file, within):
    kind, called = special_kind
    write_image(tmp_path / "images" / "a.png")
    special_file(tmp_path / "images" / "b.png", kind)
    (tmp_path / "set.csv").write_text("path,target\nimages/a.png,0\nimages/b.png,1\n")
    with within(LIMIT_S), pytest.raises(DataError) as excinfo:
        read_csv_manifest(tmp_path / "set.csv", 8)
    refusal(excinfo, f"set.csv row 3: image images/b.png is {called}")


def test_a_csv_manifest_that_is_a_special_file_is_refused(tmp_path, special_kind, special_file, within):
    kind, called = special_kind
    path = special_file(tmp_path / "set.csv", kind)
    with within(LIMIT_S):
        with pytest.raises(DataError) as excinfo:
            read_csv_manifest(path, 8)
        refusal(excinfo, f"{path} is {called}")
        with pytest.raises(DataError) as excinfo:
            detect_format(path)  # what --data meets first
        refusal(excinfo, f"{path} is {called}")


@pytest.mark.parametrize("name", ["batches.meta", "data_batch_1", "test_batch"])
def test_a_cucumber9_file_that_is_special_is_refused_not_skipped(tmp_path, name, special_kind, special_file, within):
    kind, called = special_kind
    images = np.zeros((4, 4, 4, 3), np.uint8)
    folder = write_cucumber9(tmp_path / "c", images, np.array([0, 1, 5, 1]), P1_NAMES, num_batches=1, test_fraction=0.5)
    (folder / name).unlink()
    special_file(folder / name, kind)
    with within(LIMIT_S), pytest.raises(DataError) as excinfo:
        read_cucumber9(folder)
    refusal(excinfo, f"{folder / name} is {called}")


def test_a_cucumber9_archive_that_is_special_is_refused(tmp_path, special_kind, special_file, within):
    kind, called = special_kind
    path = special_file(tmp_path / "cucumber-9-python.tar.gz", kind)
    with within(LIMIT_S), pytest.raises(DataError) as excinfo:
        read_cucumber9(path)
    refusal(excinfo, f"{path} is {called}")


@pytest.mark.parametrize("suffix", [".txt", ".parquet"])
def test_a_ray_list_or_table_that_is_special_is_refused(tmp_path, suffix, special_kind, special_file, within):
    kind, called = special_kind
    path = special_file(tmp_path / f"paths{suffix}", kind)
    with within(LIMIT_S), pytest.raises(DataError) as excinfo:
        read_paths(path)
    refusal(excinfo, f"{path} is {called}")


def test_a_folder_named_like_a_photo_is_refused_as_a_folder(tmp_path):
    (tmp_path / "x.png").mkdir()
    with pytest.raises(DataError, match=r"x.png is a folder, not a regular file: pass a file$"):
        load_image(tmp_path / "x.png", 8)
