"""Class folders and CSV manifests, on tiny images written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrade.core.errors import ConfigError, DataError
from imgrade.data.csv_manifest import read_csv_manifest
from imgrade.data.folders import (
    is_class_folders,
    read_class_folders,
    read_grades_file,
    resolve_grade_order,
)

COLOURS = {"good": (0, 200, 0), "ok": (200, 200, 0), "bad": (200, 0, 0), "reject": (0, 0, 0)}


def write_image(path: Path, colour=(128, 128, 128)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def write_grades(root: Path, *names: str) -> None:
    for grade in names:
        write_image(root / grade / f"{grade}_img2.png", COLOURS.get(grade, (1, 2, 3)))
        write_image(root / grade / f"{grade}_img10.png", COLOURS.get(grade, (1, 2, 3)))


def one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ---- class folders ---------------------------------------------------------------------------


def test_is_class_folders(tmp_path):
    write_grades(tmp_path / "plain", "good", "bad")
    write_grades(tmp_path / "split" / "train", "good", "bad")
    write_image(tmp_path / "flat" / "a.png")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert is_class_folders(tmp_path / "plain")
    assert is_class_folders(tmp_path / "split")
    assert not is_class_folders(tmp_path / "flat")
    assert not is_class_folders(tmp_path / "empty")
    assert not is_class_folders(tmp_path / "flat" / "a.png")


def test_read_grades_file(tmp_path):
    path = tmp_path / "grades.txt"
    path.write_text("# best first\ngood\n\n  ok  \nbad\n")
    assert read_grades_file(path) == ["good", "ok", "bad"]


def test_read_grades_file_duplicate(tmp_path):
    path = tmp_path / "grades.txt"
    path.write_text("good\nbad\ngood\n")
    with pytest.raises(DataError) as excinfo:
        read_grades_file(path)
    one_line_error(excinfo, str(path), "'good' twice", "lines 1 and 3")


def test_read_grades_file_without_grades(tmp_path):
    path = tmp_path / "grades.txt"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(DataError) as excinfo:
        read_grades_file(path)
    one_line_error(excinfo, str(path), "no grades")


def test_class_folders_with_grades_txt(tmp_path):
    write_grades(tmp_path, "good", "ok", "bad")
    (tmp_path / "grades.txt").write_text("good\nok\nbad\nreject\n")
    imageset = read_class_folders(tmp_path, 16)
    assert imageset.grade_names == ["good", "ok", "bad", "reject"]
    assert imageset.counts() == {"good": 2, "ok": 2, "bad": 2, "reject": 0}  # no folder: 0 images
    assert imageset.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert imageset.ids[:2] == ["good/good_img2.png", "good/good_img10.png"]
    assert imageset.images.shape == (6, 16, 16, 3)
    for image, target in zip(imageset.images, imageset.targets):
        assert tuple(image[0, 0]) == COLOURS[imageset.grade_names[int(target)]]
    assert imageset.source == f"class folders {tmp_path}"
    assert imageset.split is None
    assert resolve_grade_order(tmp_path)[1] == "grades.txt"


def test_given_order_wins_over_grades_txt(tmp_path):
    write_grades(tmp_path, "good", "bad")
    (tmp_path / "grades.txt").write_text("good\nbad\n")
    imageset = read_class_folders(tmp_path, 8, grade_order=["bad", "good"])
    assert imageset.grade_names == ["bad", "good"]
    assert imageset.ids[0].startswith("bad/")


def test_inferred_orders(tmp_path):
    write_grades(tmp_path / "cucumber", "S", "2L", "M")
    assert read_class_folders(tmp_path / "cucumber", 8).grade_names == ["2L", "M", "S"]
    assert resolve_grade_order(tmp_path / "cucumber") == (["2L", "M", "S"], "CUCUMBER-9")
    write_grades(tmp_path / "other", "grade10", "grade2")
    assert read_class_folders(tmp_path / "other", 8).grade_names == ["grade2", "grade10"]
    assert resolve_grade_order(tmp_path / "other")[1] == "natural sort"


def test_train_val_test_folders(tmp_path):
    write_grades(tmp_path / "train", "good", "bad")
    write_grades(tmp_path / "test", "good")
    (tmp_path / "grades.txt").write_text("good\nbad\n")
    imageset = read_class_folders(tmp_path, 8)
    assert imageset.split.tolist() == ["train"] * 4 + ["test"] * 2
    assert imageset.targets.tolist() == [0, 0, 1, 1, 0, 0]
    assert imageset.ids[0] == "train/good/good_img2.png" and imageset.ids[-1] == "test/good/good_img10.png"


def test_split_folders_without_train(tmp_path):
    write_grades(tmp_path / "val", "good")
    with pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path, 8)
    one_line_error(excinfo, str(tmp_path), "no train/")


def test_split_folders_mixed_with_grade_folders(tmp_path):
    write_grades(tmp_path / "train", "good")
    write_grades(tmp_path / "valid", "good")
    with pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path, 8)
    one_line_error(excinfo, "valid", "train/val/test")


def test_unknown_grade_folder(tmp_path):
    write_grades(tmp_path, "good", "bad", "weird")
    (tmp_path / "grades.txt").write_text("good\nbad\n")
    with pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path, 8)
    one_line_error(excinfo, str(tmp_path / "weird"), "['good', 'bad']", "grades.txt")
    with pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path, 8, grade_order=["good", "bad"])
    one_line_error(excinfo, str(tmp_path / "weird"), "--grades")


def test_grade_folder_without_images(tmp_path):
    write_grades(tmp_path, "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "readme.txt").write_text("todo")
    with pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path, 8)
    one_line_error(excinfo, f"no images in {tmp_path / 'bad'}")


def test_image_outside_grade_folders(tmp_path):
    write_grades(tmp_path, "good")
    write_image(tmp_path / "stray.png")
    with pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path, 8)
    one_line_error(excinfo, str(tmp_path / "stray.png"), "grade folder")


def test_corrupt_image_in_class_folder(tmp_path):
    write_grades(tmp_path, "good")
    (tmp_path / "good" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError) as excinfo:
        read_class_folders(tmp_path, 8)
    one_line_error(excinfo, str(tmp_path / "good" / "broken.jpg"))


# ---- CSV manifests ---------------------------------------------------------------------------


def write_manifest(tmp_path: Path, text: str, images=("a.png", "b.png", "c.png")) -> Path:
    for name in images:
        write_image(tmp_path / "images" / name)
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    return path


def test_csv_ordinal_integers(tmp_path):
    path = write_manifest(tmp_path, "path,target\nimages/a.png,1\nimages/b.png,3\nimages/c.png,2\n")
    imageset = read_csv_manifest(path, 8)
    assert imageset.grade_names == ["1", "2", "3"]
    assert imageset.targets.tolist() == [0, 2, 1] and imageset.targets.dtype == np.float32
    assert imageset.ids == ["images/a.png", "images/b.png", "images/c.png"]
    assert imageset.images.shape == (3, 8, 8, 3)
    assert imageset.source == f"CSV manifest {path}"
    assert imageset.split is None


def test_csv_continuous(tmp_path):
    path = write_manifest(tmp_path, "path,target\nimages/a.png,0.5\nimages/b.png,2\nimages/c.png,-1.25\n")
    imageset = read_csv_manifest(path, 8)
    assert imageset.grade_names is None
    assert imageset.targets.tolist() == [0.5, 2.0, -1.25] and imageset.targets.dtype == np.float32
    integers = write_manifest(tmp_path, "path,target\nimages/a.png,120\nimages/b.png,135\n")
    assert read_csv_manifest(integers, 8, continuous=True).targets.tolist() == [120.0, 135.0]


def test_csv_grade_names(tmp_path):
    path = write_manifest(tmp_path, "path,target\nimages/a.png,bad\nimages/b.png, good \nimages/c.png,ok\n")
    imageset = read_csv_manifest(path, 8, grade_order=["good", "ok", "bad"])
    assert imageset.grade_names == ["good", "ok", "bad"]
    assert imageset.targets.tolist() == [2, 0, 1]
    numbered = write_manifest(tmp_path, "path,target\nimages/a.png,2\nimages/b.png,0.0\n")
    assert read_csv_manifest(numbered, 8, grade_order=["0", "1", "2"]).targets.tolist() == [2, 0]


def test_csv_grade_names_take_the_order_of_a_grades_txt_beside_the_csv(tmp_path):
    path = write_manifest(tmp_path, "path,target\nimages/a.png,bad\nimages/b.png,good\nimages/c.png,bad\n")
    (tmp_path / "grades.txt").write_text("good\nok\nbad\n")
    imageset = read_csv_manifest(path, 8)
    assert imageset.grade_names == ["good", "ok", "bad"]  # ok too, though no row has it
    assert imageset.targets.tolist() == [2, 0, 2]
    assert read_csv_manifest(path, 8, grade_order=["bad", "good"]).targets.tolist() == [0, 1, 0]  # --grades wins
    unknown = write_manifest(tmp_path, "path,target\nimages/a.png,good\nimages/b.png,great\n")
    with pytest.raises(DataError) as excinfo:
        read_csv_manifest(unknown, 8)
    one_line_error(excinfo, "row 3", "'great'", f"add the grade to {tmp_path / 'grades.txt'}")


def test_csv_grade_indexes_beside_a_grades_txt_stay_numbers(tmp_path):
    """imgrade data synth writes grades.txt beside attributes.csv, whose targets are grade indexes."""
    path = write_manifest(tmp_path, "path,target,length\nimages/a.png,0,1.5\nimages/b.png,2,2.5\n")
    (tmp_path / "grades.txt").write_text("good\nok\nbad\n")
    assert read_csv_manifest(path, 8).grade_names == ["0", "1", "2"]
    assert read_csv_manifest(path, 8, target_column="length").targets.tolist() == [1.5, 2.5]
    numbered = write_manifest(tmp_path, "path,target\nimages/a.png,3\nimages/b.png,1\n")
    (tmp_path / "grades.txt").write_text("3\n2\n1\n")  # integer names: its order, not the numbers'
    imageset = read_csv_manifest(numbered, 8)
    assert imageset.grade_names == ["3", "2", "1"] and imageset.targets.tolist() == [0, 2]


def test_csv_split_column_custom_target_and_absolute_path(tmp_path):
    absolute = write_image(tmp_path / "elsewhere" / "d.png")
    path = write_manifest(
        tmp_path,
        f"Path,Weight,Split,notes\nimages/a.png,1.5,train,x\nimages/b.png,2.5,,y\n\n{absolute},3.5,TEST,z\n",
    )
    imageset = read_csv_manifest(path, 8, target_column="weight")
    assert imageset.split.tolist() == ["train", "", "test"]
    assert imageset.targets.tolist() == [1.5, 2.5, 3.5]
    assert imageset.ids[2] == str(absolute)


@pytest.mark.parametrize(
    "text, needles",
    [
        ("path,grade\nimages/a.png,1\n", ["no column target", "'path', 'grade'"]),
        ("path,target\nimages/a.png,1\nimages/b.png,\n", ["row 3", "missing"]),
        ("path,target\nimages/a.png,1\n\nimages/b.png,big\n", ["row 4", "'big'", "not a number"]),
        ("path,target\nimages/a.png,nan\n", ["row 2", "'nan'"]),
        ("path,target\nimages/a.png,1\nimages/zz.png,2\n", ["row 3", "images/zz.png", "does not exist"]),
        ("path,target\n,1\n", ["row 2", "path is empty"]),
        ("path,target,split\nimages/a.png,1,training\n", ["row 2", "'training'", "train, val, test"]),
        ("path,target\n", ["no rows"]),
        ("", ["is empty"]),
    ],
)
def test_csv_errors_name_file_and_row(tmp_path, text, needles):
    path = write_manifest(tmp_path, text)
    with pytest.raises(DataError) as excinfo:
        read_csv_manifest(path, 8)
    one_line_error(excinfo, str(path), *needles)


def test_csv_unknown_grade_name(tmp_path):
    path = write_manifest(tmp_path, "path,target\nimages/a.png,good\nimages/b.png,great\n")
    with pytest.raises(DataError) as excinfo:
        read_csv_manifest(path, 8, grade_order=["good", "bad"])
    one_line_error(excinfo, str(path), "row 3", "'great'", "['good', 'bad']")


def test_csv_ordinal_rejects_fractions(tmp_path):
    path = write_manifest(tmp_path, "path,target\nimages/a.png,1\nimages/b.png,1.5\n")
    with pytest.raises(DataError) as excinfo:
        read_csv_manifest(path, 8, continuous=False)
    one_line_error(excinfo, str(path), "row 3", "'1.5'")


def test_csv_missing_file_and_conflicting_options(tmp_path):
    with pytest.raises(DataError) as excinfo:
        read_csv_manifest(tmp_path / "nope.csv", 8)
    one_line_error(excinfo, "nope.csv", "does not exist")
    path = write_manifest(tmp_path, "path,target\nimages/a.png,1\n")
    with pytest.raises(ConfigError):
        read_csv_manifest(path, 8, grade_order=["1"], continuous=True)


def test_csv_corrupt_image_names_the_file(tmp_path):
    path = write_manifest(tmp_path, "path,target\nimages/a.png,1\nimages/bad.png,2\n")
    (tmp_path / "images" / "bad.png").write_text("not an image")
    with pytest.raises(DataError) as excinfo:
        read_csv_manifest(path, 8)
    one_line_error(excinfo, "bad.png", "not an image")
