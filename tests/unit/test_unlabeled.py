"""The unlabelled pool: a folder, a CSV with a path column, a text list; refused with one line."""

import os

import numpy as np
import pytest
from PIL import Image

from imgrade.core.errors import DataError
from imgrade.data.cache import DecodeOptions
from imgrade.data.unlabeled import drop_labelled, list_pool, read_pool


def _photos(folder, n=3, size=12):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.png"
        Image.fromarray(np.full((size, size, 3), 40 * i, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_folder_csv_and_list_name_the_same_photos(tmp_path):
    _photos(tmp_path / "pool" / "day1")
    (tmp_path / "pool" / "notes.md").write_text("not a photo")
    files, ids, source = list_pool(tmp_path / "pool")
    assert ids == ["day1/p0.png", "day1/p1.png", "day1/p2.png"] and source.startswith("folder")
    (tmp_path / "pool" / "index.csv").write_text("Path,grade\nday1/p0.png,\n\nday1/p2.png,M\n")
    assert list_pool(tmp_path / "pool" / "index.csv")[1] == ["day1/p0.png", "day1/p2.png"]
    (tmp_path / "list.txt").write_text(f"# today's photos\n{tmp_path}/pool/day1/p1.png\n\npool/day1/p0.png\n")
    files, ids, _ = list_pool(tmp_path / "list.txt")
    assert files == [tmp_path / "pool/day1/p1.png", tmp_path / "pool/day1/p0.png"]
    pool = read_pool(tmp_path / "list.txt", 8, DecodeOptions())
    assert pool.images.shape == (2, 8, 8, 3) and pool.images[0].max() == 40 and len(pool) == 2


@pytest.mark.parametrize(
    "content, expected",
    [
        ("file,grade\na.png,1\n", "no path column"),
        ("path\nmissing.png\n", "row 2: photo missing.png does not exist"),
        ("path\nnotes.md\n", "row 2: notes.md is not an image file name"),
        ('path\n""\nx\n', "row 3: photo x does not exist"),
    ],
)
def test_bad_csv_is_refused_naming_the_row(tmp_path, content, expected):
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "pool.csv").write_text(content)
    with pytest.raises(DataError, match=expected):
        list_pool(tmp_path / "pool.csv")


def test_special_files_and_unknown_kinds_are_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "list.txt").write_text("pipe.png\n")
    with pytest.raises(DataError, match="row 1: photo pipe.png is a FIFO"):
        list_pool(tmp_path / "list.txt")
    (tmp_path / "pool.json").write_text("{}")
    with pytest.raises(DataError, match="not a folder, a .csv or a .txt list"):
        list_pool(tmp_path / "pool.json")
    with pytest.raises(DataError, match="do not exist"):
        list_pool(tmp_path / "nowhere")
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    with pytest.raises(DataError, match="names no photos"):
        list_pool(tmp_path / "empty.txt")


def test_photos_also_labelled_leave_the_pool(tmp_path):
    _photos(tmp_path / "pool", n=4)
    pool = read_pool(tmp_path / "pool", 8, DecodeOptions())
    kept, dropped = drop_labelled(pool, np.asarray(pool.images)[[1, 3]])
    assert dropped == 2 and kept.ids == ["p0.png", "p2.png"] and len(kept.images) == 2
