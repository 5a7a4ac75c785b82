"""A timm backbone through the whole pipeline: train, evaluate, export to ONNX, grade with the file."""

import csv
import io
from pathlib import Path

import pytest
import torch
import yaml

from imgrade.cli import main
from imgrade.core.errors import ConfigError
from imgrade.models.timm_backbone import import_timm
from imgrade.runtime.run_checkpoint import Checkpoint

TINY = "test_resnet"
"""timm's smallest ResNet (about 0.4 M parameters), registered for timm's own tests."""


@pytest.fixture(scope="module")
def timm():
    try:
        return import_timm()
    except ConfigError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_a_timm_backbone_trains_evaluates_exports_and_grades(timm, synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    # 48 px from 32 px photos: any --image-size works, the timm network pools globally
    argv = [
        "train",
        "--data",
        str(synth_dir),
        "--backbone",
        f"timm:{TINY}",
        "--task",
        "coral",
        "--image-size",
        "48",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--out",
        str(run),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"training coral timm {TINY} on cpu, " in err and " for 2 epochs" in err
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert model["backbone"] == f"timm:{TINY}" and model["pretrained"] is None
    assert Checkpoint.load(run / "best.pt").calibration() is not None

    assert main(["evaluate", str(run)]) == 0
    assert (run / "eval-test" / "metrics.json").is_file()

    onnx_file = tmp_path / "tiny.onnx"
    assert main(["export", str(run), "--out", str(onnx_file)]) == 0  # refuses to write a graph off PyTorch's by 1e-4
    capsys.readouterr()
    photos = [_a_png(tmp_path, i) for i in range(3)]
    assert main(["predict", str(onnx_file), *map(str, photos)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3
    assert all(row["grade"] in Checkpoint.load(run / "best.pt").grade_names for row in rows)
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, photos)]) == 0  # the torch runtime rebuilds the timm model too
    torch_rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["grade"] for r in torch_rows] == [r["grade"] for r in rows]


def _a_png(folder: Path, i: int) -> Path:
    from PIL import Image

    from imgrade.data.synthetic import generate_cucumbers

    image = generate_cucumbers(3, seed=11).imageset.images[i]
    path = folder / f"photo{i}.png"
    Image.fromarray(image).save(path)
    return path


def test_training_starts_from_the_pretrained_file(timm, synth_dir, tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    state = timm.create_model(TINY).state_dict()  # with its classifier, as a downloaded file has
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    run = tmp_path / "run"
    # a learning rate so small that one epoch leaves the loaded kernels as they were, to 1e-6
    argv = [
        "train",
        "--data",
        str(synth_dir),
        "--backbone",
        f"timm:{TINY}",
        "--pretrained",
        str(weights),
        "--epochs",
        "1",
        "--lr",
        "1e-9",
        "--out",
        str(run),
    ]
    assert main(argv) == 0
    assert f"backbone: timm {TINY} with the weights of {weights}" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["pretrained"] == str(weights)
    trained = Checkpoint.load(run / "best.pt").model_state
    kernels = [k for k, v in state.items() if v.ndim == 4]
    assert kernels and all(torch.allclose(trained[f"backbone.model.{k}"], state[k], atol=1e-6) for k in kernels)
