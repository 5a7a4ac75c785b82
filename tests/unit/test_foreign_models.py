"""Checkpoints and ONNX files from elsewhere: each refused in one line that names the file.

A random file, an empty one, pickles that would run code, weights of another architecture, a
newer format, and ONNX graphs of another architecture that carry valid imgrade metadata go
through ``imgrade predict``/``evaluate``/``export`` and ``load_grader``.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from imgrade.cli import main
from imgrade.config import RunConfig
from imgrade.core.checkpoint import save_checkpoint
from imgrade.core.errors import CheckpointError
from imgrade.models.factory import build_model
from imgrade.runtime import load_grader
from imgrade.runtime.onnx_engine import METADATA_KEY, OnnxEngine

GRADES = ["2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C"]


class RunsCode:
    """Unpickled, it would create ``marker``: what a hostile checkpoint does with a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def depth29() -> dict:
    """The payload `imgrade train` saves, for an untrained depth-29 regression network."""
    return {
        "imgrade_version": "test",
        "config": RunConfig().to_dict(),
        "grade_names": GRADES,
        "image_size": 32,
        "mean_image": torch.zeros(3, 32, 32),
        "data_source": "test",
        "model_state": build_model(29, "regression", num_grades=len(GRADES)).state_dict(),
    }


def write_pt(path, depth29, kind: str) -> None:
    marker = path.parent / "MARKER"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "code":  # torch.save's zip format, with a pickle that calls os.system
        torch.save({"format_version": 1, "model_state": RunsCode(marker)}, path)
    elif kind == "code-legacy":  # a bare pickle, as torch.save wrote before its zip format
        path.write_bytes(pickle.dumps({"format_version": 1, "x": RunsCode(marker)}, protocol=2))
    elif kind == "depth-20-weights":
        save_checkpoint(
            path, {**depth29, "model_state": build_model(20, "regression", num_grades=len(GRADES)).state_dict()}
        )
    elif kind == "other-state-dict":  # a torchvision-style state dict: other keys, no imgrade fields
        torch.save(
            torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2)).state_dict(), path
        )
    elif kind == "newer-format":
        torch.save({**depth29, "format_version": 3}, path)
    elif kind == "tensor-format":
        torch.save({**depth29, "format_version": torch.ones(3)}, path)
    elif kind == "no-mean-image":
        save_checkpoint(path, {key: value for key, value in depth29.items() if key != "mean_image"})
    elif kind == "wrong-mean-image":
        save_checkpoint(path, {**depth29, "mean_image": torch.zeros(3, 64, 64)})
    else:
        raise AssertionError(kind)


PT_FILES = {
    "random": "is not a readable imgrade checkpoint",
    "empty": "is not a readable imgrade checkpoint (EOFError)",
    "code": "holds Python objects that could run code when loaded",
    "code-legacy": "holds Python objects that could run code when loaded",
    "depth-20-weights": "holds weights that do not fit the ResNet v2 depth 29 regression network",
    "other-state-dict": "is not an imgrade checkpoint (no format_version)",
    "newer-format": "has checkpoint format 3 but this imgrade reads formats 1, 2",
    "tensor-format": "has checkpoint format of type Tensor",
    "no-mean-image": "no 'mean_image' entry",
    "wrong-mean-image": "a mean_image of shape (3, 64, 64) for image_size 32",
}


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "cucumber.png"
    Image.new("RGB", (32, 32), (20, 120, 40)).save(path)
    return path


def one_line_naming(err: str, path, expected: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and expected in lines[0], lines[0]


def test_the_unbroken_checkpoint_grades(tmp_path, depth29, photo, capsys):
    path = tmp_path / "model.pt"
    save_checkpoint(path, depth29)
    assert main(["predict", str(path), str(photo)]) == 0
    assert "cucumber.png" in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["predict", "evaluate", "export"])
@pytest.mark.parametrize("kind", list(PT_FILES))
def test_foreign_checkpoint_is_refused_in_one_line(kind, verb, tmp_path, depth29, photo, capsys):
    path = tmp_path / f"{kind}.pt"
    write_pt(path, depth29, kind)
    out = tmp_path / "model.onnx"
    argv = {
        "predict": ["predict", str(path), str(photo)],
        "evaluate": ["evaluate", str(path)],
        "export": ["export", str(path), "--out", str(out)],
    }[verb]
    assert main(argv) == 2
    one_line_naming(capsys.readouterr().err, path, PT_FILES[kind])
    assert not (tmp_path / "MARKER").exists(), "the pickle ran code"
    assert not out.exists()


@pytest.mark.parametrize("kind", list(PT_FILES))
def test_load_grader_refuses_a_foreign_checkpoint(kind, tmp_path, depth29):
    path = tmp_path / f"{kind}.pt"
    write_pt(path, depth29, kind)
    with pytest.raises(CheckpointError) as info:
        load_grader(path)
    one_line_naming(str(info.value), path, PT_FILES[kind])
    assert not (tmp_path / "MARKER").exists()


# ---------------------------------------------------------------------------------------------
# ONNX graphs of another architecture, carrying metadata copied from a real imgrade export


METADATA = {"format": 1, "task": "regression", "grade_names": GRADES, "image_size": 32, "calibration": None}


def other_graph(
    path,
    input_type=TensorProto.UINT8,
    input_shape=("batch", 32, 32, 3),
    outputs=("score", "native"),
    fixed_batch=False,
    meta=METADATA,
):
    """A mean-brightness "grader": not imgrade's network, but with imgrade's metadata."""
    score = "mean" if fixed_batch else "score"
    nodes = [
        helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "axes"], [score], keepdims=0),
        helper.make_node("Cast", [score], ["native"], to=TensorProto.INT64),
    ]
    if fixed_batch:  # loads, but fails on more than one image
        nodes.append(helper.make_node("Reshape", ["mean", "one"], ["score"]))
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    kinds = {"score": TensorProto.FLOAT, "native": TensorProto.INT64}
    graph = helper.make_graph(
        nodes,
        "other",
        [helper.make_tensor_value_info("images", input_type, list(input_shape))],
        [helper.make_tensor_value_info(name, kinds[name], ["batch"]) for name in outputs],
        initializer=[axes, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(model, path)


ONNX_FILES = {
    "float-nchw": (lambda p: other_graph(p, TensorProto.FLOAT, ("batch", 3, 32, 32)), "bad input images tensor(float)"),
    "other-size": (
        lambda p: other_graph(p, input_shape=("batch", 64, 64, 3)),
        "bad input images tensor(uint8) ['batch', 64, 64, 3]",
    ),
    "no-native-output": (lambda p: other_graph(p, outputs=("score",)), "bad outputs score tensor(float)"),
    "pickle": (lambda p: p.write_bytes(pickle.dumps(RunsCode(p.parent / "MARKER"))), "is not a readable ONNX model"),
    # grade names that could not be told apart on a result row
    "grade-named-twice": (
        lambda p: other_graph(p, meta={**METADATA, "grade_names": [*GRADES[:-1], "L"]}),
        "bad grade_names ('L' is named twice): export the run with `imgrade export",
    ),
    "empty-grade-name": (
        lambda p: other_graph(p, meta={**METADATA, "grade_names": ["2L", "", *GRADES[2:]]}),
        "bad grade_names (grade 2 has an empty name): export the run",
    ),
    "blank-grade-name": (
        lambda p: other_graph(p, meta={**METADATA, "grade_names": [*GRADES[:-1], " \t"]}),
        "bad grade_names (grade 9 has an empty name): export the run",
    ),
}


@pytest.mark.parametrize("kind", list(ONNX_FILES))
def test_foreign_onnx_is_refused_in_one_line(kind, tmp_path, photo, capsys):
    path = tmp_path / f"{kind}.onnx"
    make, expected = ONNX_FILES[kind]
    make(path)
    assert main(["predict", str(path), str(photo)]) == 2
    one_line_naming(capsys.readouterr().err, path, expected)
    with pytest.raises(CheckpointError) as info:
        load_grader(path)
    one_line_naming(str(info.value), path, expected)
    assert not (tmp_path / "MARKER").exists()


def test_a_graph_that_loads_but_fails_on_a_batch_is_refused(tmp_path, photo, capsys):
    path = tmp_path / "fixed-batch.onnx"
    other_graph(path, fixed_batch=True)
    grader = OnnxEngine.from_file(path)  # its inputs and outputs look right
    assert grader.outputs(np.zeros((1, 32, 32, 3), np.uint8)).scores.shape == (1,)
    with pytest.raises(CheckpointError, match="failed to grade the images") as info:
        grader.outputs(np.zeros((2, 32, 32, 3), np.uint8))
    one_line_naming(str(info.value), path, "fixed-batch.onnx")
    assert main(["predict", str(path), str(photo), str(photo)]) == 2
    one_line_naming(capsys.readouterr().err, path, "failed to grade the images")
