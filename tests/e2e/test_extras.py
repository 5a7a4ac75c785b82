"""Installable in parts: with only the base install an .onnx file grades and serves; a verb whose
extra is missing says which to install, in one line.

Each command runs in a subprocess whose ``sitecustomize`` makes the extras' packages unimportable,
as they are where ``pip install imgrade`` alone was run (the wheel itself is installed without torch
by ``scripts/wheel_check.sh`` in CI).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imgrade.cli import main
from imgrade.cli.extras import EXTRAS
from imgrade.data.synthetic import generate_cucumbers

TRAIN_EXTRA = sorted(module for module, (_, extra) in EXTRAS.items() if extra in ("train", "timm"))
SERVE_EXTRA = sorted(module for module, (_, extra) in EXTRAS.items() if extra == "serve")

BLOCKER = """\
import os
import sys

BLOCKED = set(os.environ["IMGRADE_TEST_BLOCK"].split(","))


class Blocker:
    \"\"\"Any import of a blocked package fails as if it were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""


def _env_without(tmp_path: Path, modules: list[str]) -> dict[str, str]:
    """The environment of a Python that cannot import ``modules``."""
    folder = tmp_path / "blocker"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    paths = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "IMGRADE_TEST_BLOCK": ",".join(modules)}


def _imgrade(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imgrade", *argv], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def onnx_model(coral_run, tmp_path_factory) -> Path:
    """A CORAL run exported by the real exporter (torch is installed here), before any blocking."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(coral_run), "--out", str(out)]) == 0
    return out


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "cucumber.jpg"
    Image.fromarray(generate_cucumbers(1, seed=5).imageset.images[0]).resize((64, 48)).save(path)
    return path


def test_the_blocker_really_blocks(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import torch"], env=_env_without(tmp_path, ["torch"]), capture_output=True, text=True
    )
    assert done.returncode == 1 and "No module named 'torch'" in done.stderr


def test_predict_with_an_onnx_file_needs_no_extra(onnx_model, photo, tmp_path):
    env = _env_without(tmp_path, TRAIN_EXTRA + SERVE_EXTRA)
    done = _imgrade(env, "predict", str(onnx_model), str(photo), "--format", "json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["image"].endswith("cucumber.jpg") and row["grade"] in row["grade_set"]
    assert isinstance(row["score"], float)


def test_serve_with_an_onnx_file_needs_only_the_serve_extra(onnx_model, photo, tmp_path, imgrade_serve):
    env = _env_without(tmp_path, TRAIN_EXTRA)
    with imgrade_serve(onnx_model, tmp_path / "server.log", env=env) as url:
        response = httpx.post(
            f"{url}/v1/grade", files={"files": ("cucumber.jpg", photo.read_bytes(), "image/jpeg")}, timeout=60
        )
        assert response.status_code == 200, response.text
        (record,) = response.json()["results"]
        assert record["grade"] in httpx.get(f"{url}/v1/model", timeout=10).json()["grades"]


@pytest.mark.parametrize(
    "argv, blocked, expected",
    [
        (
            ["train", "--data", "{tmp}", "--out", "{tmp}/run"],
            TRAIN_EXTRA,
            r"imgrade train needs PyTorch: pip install 'imgrade\[train\]'",
        ),
        (
            ["export", "{tmp}", "--out", "{tmp}/m.onnx"],
            TRAIN_EXTRA,
            r"imgrade export needs PyTorch: pip install 'imgrade\[train\]'",
        ),
        (
            ["data", "synth", "--out", "{tmp}/s"],
            TRAIN_EXTRA,
            r"imgrade data synth needs PyTorch: pip install 'imgrade\[train\]'",
        ),
        (["serve", "{model}"], SERVE_EXTRA, r"imgrade serve needs (FastAPI|uvicorn): pip install 'imgrade\[serve\]'"),
    ],
    ids=["train", "export", "data-synth", "serve"],
)
def test_a_verb_whose_extra_is_missing_names_it_in_one_line(argv, blocked, expected, onnx_model, tmp_path):
    argv = [a.format(tmp=tmp_path, model=onnx_model) for a in argv]
    done = _imgrade(_env_without(tmp_path, blocked), *argv)
    assert done.returncode == 2 and done.stdout == ""
    assert re.fullmatch(expected, done.stderr.strip()), done.stderr


def test_a_run_folder_without_torch_says_to_install_train_or_grade_the_onnx_file(coral_run, photo, tmp_path):
    done = _imgrade(_env_without(tmp_path, TRAIN_EXTRA), "predict", str(coral_run), str(photo))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "pip install 'imgrade[train]'" in done.stderr and "imgrade export" in done.stderr
