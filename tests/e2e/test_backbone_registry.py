"""One registry of backbones: a backbone registered in one place trains, exports and grades everywhere."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from imgrade.cli import main
from imgrade.config import RunConfig
from imgrade.core.errors import CheckpointError, ConfigError
from imgrade.core.registry import backbone_entry, backbone_names, register_backbone, unregister_backbone
from imgrade.data.synthetic import generate_cucumbers
from imgrade.models.backbones import build_backbone
from imgrade.models.factory import build_model
from imgrade.models.resnet_v2 import ResNetV2
from imgrade.pipeline import export
from imgrade.runtime import load_grader


class TinyConv(nn.Module):
    """One 3x3 conv and a global average pool: the smallest network a head can learn on."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> pooled features (B, width)."""
        return torch.flatten(self.pool(torch.relu(self.conv(x))), 1)  # (B, width)

    forward = forward_features


def build_tiny_conv(**_) -> TinyConv:
    """The builder ``register_backbone`` names; it ignores ``depth``, ``image_size`` and ``pretrained``."""
    return TinyConv()


@pytest.fixture
def toy():
    # the one place the new backbone is declared
    register_backbone("toy", build_tiny_conv, "one 3x3 conv and a global average pool")
    yield "toy"
    unregister_backbone("toy")


def test_a_registered_backbone_trains_exports_and_grades_with_onnx(toy, synth_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "toy (one 3x3 conv and a global average pool)" in " ".join(capsys.readouterr().out.split())
    run = tmp_path / "run"
    argv = ["train", "--data", str(synth_dir), "--backbone", toy, "--task", "coral", "--epochs", "2", "--out", str(run)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "training coral toy on cpu, " in err and " for 2 epochs" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["backbone"] == "toy"

    grader = load_grader(run)  # the runtime rebuilds the network from best.pt's config: through the registry
    assert isinstance(grader.model.backbone, TinyConv)
    out = tmp_path / "toy.onnx"
    export(run, out=out)  # refuses to write a graph off PyTorch's by 1e-4
    onnx_grader = load_grader(out)
    images = generate_cucumbers(24, seed=7).imageset.images
    expected, got = grader.outputs(images), onnx_grader.outputs(images)
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-4)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-4)
    np.testing.assert_array_equal(got.native, expected.native)

    # the .onnx file holds the network; the run needs its backbone registered to be rebuilt
    unregister_backbone(toy)
    with pytest.raises(CheckpointError, match="trained with --backbone toy, which is not registered here: register it"):
        load_grader(run)
    np.testing.assert_allclose(load_grader(out).outputs(images).scores, expected.scores, atol=1e-4)


def test_an_unknown_backbone_is_a_one_line_error_with_the_closest_name(toy, synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--data", str(synth_dir), "--backbone", "tooy", "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (
        "imgrade: error: unknown backbone 'tooy': did you mean 'toy'? set --backbone to one of reference, timm:NAME, "
        "efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, toy"
    )
    assert not out.exists()
    with pytest.raises(ConfigError, match="did you mean 'timm:resnet18'"):
        RunConfig.from_dict({"model": {"backbone": "tim:resnet18"}})
    with pytest.raises(ConfigError, match="backbone 'toy' takes no model name after ':': set --backbone toy"):
        RunConfig.from_dict({"model": {"backbone": "toy:big"}})
    with pytest.raises(
        ConfigError,
        match="--pretrained is for --backbone timm:NAME, .* or efficientnet_lite2; to start the toy network",
    ):
        RunConfig.from_dict({"model": {"backbone": "toy", "pretrained": "weights.pth"}})


def test_unregistering_removes_the_backbone_everywhere(toy):
    assert toy in backbone_names()
    RunConfig.from_dict({"model": {"backbone": toy}})
    assert isinstance(build_model(depth=11, task="coral", num_grades=3, backbone=toy).backbone, TinyConv)
    unregister_backbone(toy)
    assert toy not in backbone_names()
    with pytest.raises(ConfigError, match="unknown backbone 'toy'.*--backbone"):
        RunConfig.from_dict({"model": {"backbone": toy}})
    with pytest.raises(ConfigError, match="unknown backbone 'toy'"):
        build_model(depth=11, task="coral", num_grades=3, backbone=toy)


def test_registration_mistakes_are_one_line_errors(toy):
    with pytest.raises(ConfigError, match="already registered"):
        register_backbone("toy", build_tiny_conv, "again")
    with pytest.raises(ConfigError, match="without ':'"):
        register_backbone("toy:big", build_tiny_conv, "a colon in the name")
    with pytest.raises(ConfigError, match="module:function"):
        register_backbone("nowhere", "tests.e2e.build_tiny_conv", "no colon")
    register_backbone("missing", "imgrade.models.backbones:no_such_builder", "a builder that is not there")
    register_backbone("headless", lambda **_: nn.Linear(3, 3), "a module without forward_features")
    try:
        with pytest.raises(ConfigError, match="cannot be imported.*fix its register_backbone line"):
            build_backbone("missing")
        with pytest.raises(ConfigError, match="built as a Linear, not an nn.Module with forward_features"):
            build_backbone("headless")
    finally:
        unregister_backbone("missing")
        unregister_backbone("headless")
    assert backbone_entry("timm:resnet18").family and not backbone_entry("reference").takes_pretrained


def test_the_reference_from_the_registry_has_the_weights_of_the_same_seed():
    torch.manual_seed(5)
    registered = build_backbone("reference", depth=11).state_dict()
    torch.manual_seed(5)
    direct = ResNetV2(depth=11).state_dict()
    assert registered.keys() == direct.keys()
    assert all(torch.equal(registered[k], direct[k]) for k in direct)


def test_the_docs_show_this_backbone_as_it_is_here():
    page = (Path(__file__).parents[2] / "docs" / "extending.md").read_text(encoding="utf-8")
    assert inspect.getsource(TinyConv) in page and inspect.getsource(build_tiny_conv) in page
    assert (
        'register_backbone("toy", "imgrade.models.tiny:build_tiny_conv", "one 3x3 conv and a global average pool")'
        in page
    )
