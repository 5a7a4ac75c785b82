"""The Python API: ``from imgrade import Grader``; every kind of item grades as ``imgrade predict``
grades its file; bad items and model files raise one ImgradeError naming them; the documented
examples run against a real run and .onnx file."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgrade
from imgrade import Grade, Grader
from imgrade.cli import main
from imgrade.core.errors import CheckpointError, ImgradeError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def onnx_file(coral_run, tmp_path_factory) -> Path:
    """The CORAL run exported: probabilities and grade sets in every grade."""
    out = tmp_path_factory.mktemp("onnx") / "coral.onnx"
    assert main(["export", str(coral_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def grader(onnx_file) -> Grader:
    return Grader.load(onnx_file)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Image files of every size and mode a user may have: larger, smaller, grey, cut-out, 16-bit, JPEG."""
    folder = tmp_path_factory.mktemp("photos")
    y, x = np.mgrid[0:40, 0:48]
    rgb = np.stack([x * 5, y * 6, np.where(x < 12, 250, 40)], axis=-1).astype(np.uint8)
    alpha = np.where(x < 24, 0, 255).astype(np.uint8)
    images = {
        "rgb.png": Image.fromarray(rgb),
        "small.png": Image.fromarray(rgb[:9, :7]),  # enlarged, not shrunk
        "grey.png": Image.fromarray(rgb[..., 1]),
        "cutout.png": Image.fromarray(np.dstack([rgb, alpha])),
        "deep.png": Image.fromarray((x * 1300 + y).astype(np.uint16)),  # 16-bit greyscale
        "photo.jpg": Image.fromarray(rgb[::-1]),
    }
    paths = {}
    for name, image in images.items():
        image.save(folder / name)
        paths[name] = folder / name
    return paths


def test_every_kind_of_item_grades_as_predict_grades_its_file(onnx_file, grader, photos, capsys):
    paths = list(photos.values())
    assert main(["predict", str(onnx_file), *map(str, paths), "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    by_path = grader.grade(paths)
    # the call: load_grader(path).grade(...) refused file paths
    assert [grade.to_dict() for grade in by_path] == printed
    assert [grade.source for grade in by_path] == [str(p) for p in paths]
    scores = [grade.score for grade in by_path]

    opened = [Image.open(p) for p in paths]
    try:
        from_pillow = grader.grade(opened)
    finally:
        for image in opened:
            image.close()
    assert [g.score for g in from_pillow] == scores and [g.source for g in from_pillow] == [str(p) for p in paths]
    from_bytes = grader.grade([p.read_bytes() for p in paths])
    assert [g.score for g in from_bytes] == scores
    assert [g.source for g in from_bytes] == [f"item {i}" for i in range(len(paths))]

    eight_bit = [name for name in photos if name != "deep.png"]
    arrays = [np.asarray(Image.open(photos[name])) for name in eight_bit]
    assert {a.ndim for a in arrays} == {2, 3} and {a.shape[-1] for a in arrays if a.ndim == 3} == {3, 4}
    expected = [scores[paths.index(photos[name])] for name in eight_bit]
    assert [g.score for g in grader.grade(arrays)] == expected
    assert [g.score for g in grader.grade([a / 255.0 for a in arrays])] == expected  # floats in [0, 1]
    grey = np.asarray(Image.open(photos["grey.png"]))
    assert grader.grade(grey[..., None]).score == scores[paths.index(photos["grey.png"])]  # (H, W, 1)


def test_one_item_gives_one_grade_and_a_list_gives_a_list(grader, photos):
    grade = grader.grade(str(photos["rgb.png"]))
    assert isinstance(grade, Grade) and grade.source == str(photos["rgb.png"])
    assert grader.grade((photos["rgb.png"],)) == [grade] and grader.grade([]) == []
    assert grade.name in grader.grades and grader.grades[grade.index] == grade.name
    assert isinstance(grade.grade_set, list) and set(grade.grade_set) <= set(grader.grades)
    assert list(grade.probabilities) == grader.grades and sum(grade.probabilities.values()) == pytest.approx(
        1, abs=1e-4
    )
    assert grade.to_dict() == {
        "image": grade.source,
        "score": grade.score,
        "grade": grade.name,
        "grade_index": grade.index,
        "grade_set": grade.grade_set,
        "probabilities": grade.probabilities,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        grade.score = 0.0


def test_a_run_folder_grades_as_its_onnx_file(coral_run, grader, photos):
    paths = list(photos.values())
    with_torch = Grader.load(coral_run, device="cpu").grade(paths)
    with_onnx = grader.grade(paths)
    assert [g.name for g in with_torch] == [g.name for g in with_onnx]
    assert max(abs(a.score - b.score) for a, b in zip(with_torch, with_onnx)) <= 1e-4


def test_grading_an_onnx_file_never_imports_torch(onnx_file, grader, photos):
    code = (
        "import json, sys\n"
        "import imgrade\n"
        "assert not {'torch', 'numpy', 'PIL'} & set(sys.modules), 'import imgrade loaded more than itself'\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now raises
        "from imgrade import Grader\n"
        f"print(json.dumps(Grader.load({str(onnx_file)!r}).grade({str(photos['photo.jpg'])!r}).to_dict()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == grader.grade(photos["photo.jpg"]).to_dict()


@pytest.mark.parametrize(
    "item, says",
    [
        ("missing.png", "missing.png does not exist: check the path"),
        (b"not a photo", "item 1 (bytes) is not an image Pillow can read"),
        (3, "item 1 has the type int: pass an image file's path"),
        (np.zeros((2, 8, 8, 3), np.uint8), "item 1 is an array of shape (2, 8, 8, 3), a batch: pass list(array)"),
        (np.zeros((8, 8, 2), np.uint8), "item 1 is an array of shape (8, 8, 2): pass (H, W) grey"),
        (np.full((8, 8), 2.0), "item 1 holds float values 2..2: float pixels must lie in [0, 1]"),
        (np.full((8, 8), np.nan), "item 1 holds float values NaN or infinite"),
        (np.zeros((8, 8), np.uint16), "item 1 is an array of uint16: pass uint8 pixels"),
    ],
)
def test_a_bad_item_is_one_error_naming_it(grader, photos, item, says):
    with pytest.raises(ImgradeError) as error:
        grader.grade([photos["rgb.png"], item])
    assert says in str(error.value) and "\n" not in str(error.value)


def test_a_file_that_is_not_an_image_is_named(grader, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("grade these please\n")
    with pytest.raises(ImgradeError, match=rf"^{re.escape(str(notes))} is not an image Pillow can read"):
        grader.grade(notes)


def test_a_model_file_of_another_kind_is_refused(photos, tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a model")
    for model, says in [
        (photos["photo.jpg"], "photo.jpg is not a model file: pass an .onnx file"),
        (fake, "fake.onnx is not a readable ONNX model"),
        (tmp_path / "nothing", "nothing does not exist"),
    ]:
        with pytest.raises(CheckpointError, match=re.escape(says)):
            Grader.load(model)


def test_the_package_names_its_api():
    assert set(imgrade.__all__) == {"Grade", "Grader", "train", "evaluate", "compare", "suggest", "__version__"}
    assert dir(imgrade) == sorted(imgrade.__all__)
    from imgrade import compare, evaluate, pipeline, train

    assert (train, evaluate, compare) == (pipeline.train, pipeline.evaluate, pipeline.compare)
    assert callable(train) and callable(evaluate)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        imgrade.nothing  # noqa: B018


def test_no_name_is_both_a_verb_and_a_module_and_no_module_name_is_used_twice():
    """Importing every module binds each as an attribute of its package: none may hide a verb, and
    a module's name says which one it is wherever it appears."""
    from imgrade import pipeline

    names = [info.name for info in pkgutil.walk_packages(imgrade.__path__, "imgrade.")]
    for name in names:
        if name not in ("imgrade.__main__", "imgrade.batch"):  # a program; Ray is an extra
            importlib.import_module(name)
    assert callable(imgrade.train) and callable(pipeline.train) and callable(pipeline.predict)
    for package in (imgrade, pipeline):
        modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        assert not modules & set(package.__all__), package.__name__
    last = [name.rsplit(".", 1)[-1] for name in names]
    assert sorted({n for n in last if last.count(n) > 1}) == []


def python_blocks(markdown: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown.read_text(), flags=re.S | re.M)


def test_the_documented_examples_run(onnx_file, coral_run, synth_dir, photos, tmp_path, monkeypatch):
    """Every ```python block of the README, deploy.md and python-api.md, in a folder with the files they name."""
    shutil.copy(onnx_file, tmp_path / "model.onnx")
    shutil.copy(onnx_file, tmp_path / "p1.onnx")
    shutil.copytree(coral_run, tmp_path / "runs" / "p1")
    shutil.copytree(synth_dir, tmp_path / "my-photos")
    shutil.copy(photos["photo.jpg"], tmp_path / "photo.jpg")
    (tmp_path / "photos").mkdir()
    for i, name in enumerate(["rgb.png", "cutout.png", "small.png"]):
        Image.open(photos[name]).convert("RGB").save(tmp_path / "photos" / f"c{i}.jpg")
    monkeypatch.chdir(tmp_path)
    printed = {}
    for page in ("README.md", "docs/deploy.md", "docs/python-api.md"):
        blocks = [b for b in python_blocks(ROOT / page) if "imgrade.batch" not in b]  # Ray's: test_batch_ray.py
        assert blocks, f"{page} has no python example"
        namespace: dict = {}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for block in blocks:
                exec(compile(block, page, "exec"), namespace)
        printed[page] = out.getvalue()
    assert printed["README.md"].startswith("Grade(source='photo.jpg', score=")
    lines = printed["docs/python-api.md"].splitlines()
    assert "photo.jpg item 0" in lines and "True" in lines
    assert sum(line.startswith("photos/c") for line in lines) == 3
    assert "missing.jpg does not exist" in printed["docs/python-api.md"]
    assert "3 3 0" in lines  # pipeline.predict: 3 photos, all graded, into grades.csv
    assert (tmp_path / "grades.csv").read_text().startswith("image,score,grade,grade_set,p_")
    assert (tmp_path / "runs" / "mine" / "eval-test" / "report.html").is_file()
    assert (
        (tmp_path / "to-label.csv").read_text().startswith("path,target,suggested,grade_set,uncertainty,rank\nphotos/c")
    )
