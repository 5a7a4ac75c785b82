"""The reference network, pinned: parameter counts, structure, init, shapes and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from imgrade.core.errors import ConfigError
from imgrade.models.factory import GradingModel, build_model
from imgrade.models.heads import RegressionHead
from imgrade.models.resnet_v2 import ResNetV2, l2_parameters
from imgrade.models.summary import count_parameters, summarize

# model.summary() totals of keras-team/keras examples/cifar10_resnet.py's resnet_v2 at depth 29
# with the classifier replaced by Dense(8, relu) -> Dense(1).
KERAS_TOTAL = 848_497
KERAS_TRAINABLE = 843_281
KERAS_NON_TRAINABLE = 5_216  # BN moving mean + moving variance


def bn_count(channels: int) -> int:
    return 4 * channels  # gamma, beta, moving mean, moving variance


def conv_count(in_channels: int, out_channels: int, kernel: int = 1) -> int:
    return in_channels * out_channels * kernel * kernel + out_channels  # with bias


def test_parameter_count_matches_keras_reference():
    counts = count_parameters(build_model())  # regression, reference head: the defaults
    assert counts == {
        "trainable": KERAS_TRAINABLE,
        "non_trainable": KERAS_NON_TRAINABLE,
        "total": KERAS_TOTAL,
    }


def test_parameter_count_per_stage_by_hand():
    model = build_model(depth=29)
    backbone = model.backbone

    def block(in_ch, mid, out, preactivate, project):
        count = bn_count(in_ch) if preactivate else 0
        count += conv_count(in_ch, mid) + bn_count(mid) + conv_count(mid, mid, 3) + bn_count(mid)
        count += conv_count(mid, out) + (conv_count(in_ch, out) if project else 0)
        return count

    expected_stages = [
        block(16, 16, 64, False, True) + 2 * block(64, 16, 64, True, False),
        block(64, 64, 128, True, True) + 2 * block(128, 64, 128, True, False),
        block(128, 128, 256, True, True) + 2 * block(256, 128, 256, True, False),
    ]
    assert expected_stages == [14_560, 167_552, 662_784]
    for stage, expected in zip(backbone.stages, expected_stages):
        assert count_parameters(stage)["total"] == expected
    assert count_parameters(backbone.stem)["total"] == conv_count(3, 16, 3) + bn_count(16) == 512
    assert count_parameters(backbone.norm)["total"] == bn_count(256)
    assert count_parameters(model.head)["total"] == (256 * 8 + 8) + (8 + 1) == 2_065
    assert 512 + sum(expected_stages) + 1_024 + 2_065 == KERAS_TOTAL


def test_count_parameters_skips_num_batches_tracked_and_counts_frozen():
    model = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)
    assert count_parameters(model) == {"trainable": 8 + 4, "non_trainable": 2 + 4, "total": 18}


def test_summary_totals_and_rows():
    model = build_model(depth=29)
    text = summarize(model, (3, 32, 32))
    assert "Total params: 848,497" in text
    assert "Trainable params: 843,281" in text
    assert "Non-trainable params: 5,216" in text
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#"]
    assert lines[2].split() == ["backbone.stem.conv", "(Conv2d)", *"(-1, 16, 32, 32) 448".split()]
    assert any("(BatchNorm2d)" in line and line.endswith(" 64") for line in lines)
    assert "(-1, 256, 8, 8)" in text
    assert lines[-5].split()[-3:] == ["(-1,", "1)", "9"]


def test_summary_leaves_model_state_unchanged():
    model = build_model(depth=11)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.eval()
    summarize(model)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("depth", [20, 38])
def test_other_depths_build_and_run(depth):
    model = build_model(depth=depth)
    assert len(model.backbone.stages[0]) == (depth - 2) // 9
    assert model.backbone.num_features == 256
    outputs = model(torch.randn(2, 3, 32, 32))
    assert outputs.shape == (2, 1)
    assert torch.isfinite(outputs).all()


@pytest.mark.parametrize("depth", [30, 2, 0, 28])
def test_bad_depth_names_the_flag(depth):
    with pytest.raises(ConfigError, match=rf"model depth {depth} is not 9n\+2 .*--depth"):
        ResNetV2(depth=depth)


def test_unknown_task_suggests_the_closest_name():
    hint = r"unknown task 'corl': did you mean 'coral'\?.*--task to one of regression, classification, coral, corn, axes, sord$"
    with pytest.raises(ConfigError, match=hint):
        build_model(task="corl")
    with pytest.raises(ConfigError, match="--task"):
        build_model(task="xyz")


def test_unknown_head_names_the_flag():
    hint = r"did you mean 'linear'\?.*--head to one of auto, reference, linear$"
    with pytest.raises(ConfigError, match=hint):
        build_model(head="liner")
    with pytest.raises(ConfigError, match="--head"):
        build_model(head="regression")  # the old meaning of --head is now --task


def test_bad_head_options_name_their_flags():
    with pytest.raises(ConfigError, match="--loss"):
        RegressionHead(256, loss="l1")
    with pytest.raises(ConfigError, match="--head"):
        RegressionHead(256, architecture="wide")
    with pytest.raises(ConfigError, match="--loss"):
        build_model(depth=11, task="coral", loss="huber", num_grades=3)


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_forward_loss_backward_are_finite(loss):
    torch.manual_seed(0)
    model = build_model(depth=29, loss=loss)
    assert isinstance(model, GradingModel)
    model.train()
    outputs = model(torch.randn(2, 3, 32, 32))
    assert outputs.shape == (2, 1)
    assert model.decode(outputs).shape == (2,)
    value = model.loss(outputs, torch.tensor([0.0, 3.0]))
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_larger_input_and_channels_last():
    torch.manual_seed(0)
    model = build_model(depth=11).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        assert model.backbone.forward_features(x).shape == (2, 256)
        model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last))
    assert expected.shape == (2, 1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_stage_resolutions():
    backbone = ResNetV2(depth=11).eval()
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        x = backbone.stem(x)
        shapes = []
        for stage in backbone.stages:
            x = stage(x)
            shapes.append(tuple(x.shape))
    assert shapes == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8)]


def test_structure_pins_the_reference():
    backbone = ResNetV2(depth=29)
    first = backbone.stages[0][0]
    # The network's first block starts directly with its conv: the stem already ended in BN-ReLU.
    assert isinstance(first.residual[0], nn.Conv2d)
    assert "norm1" not in dict(first.residual.named_children())
    for stage_index, stage in enumerate(backbone.stages):
        for block_index, block in enumerate(stage):
            convs = [m for m in block.residual if isinstance(m, nn.Conv2d)]
            assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
            assert [c.padding for c in convs] == [(0, 0), (1, 1), (0, 0)]
            downsample = block_index == 0 and stage_index > 0
            assert convs[0].stride == ((2, 2) if downsample else (1, 1))
            assert convs[1].stride == convs[2].stride == (1, 1)
            if block_index == 0:
                assert isinstance(block.shortcut, nn.Conv2d)  # bare conv: no BN, no activation
                assert block.shortcut.kernel_size == (1, 1)
                assert block.shortcut.stride == convs[0].stride
            else:
                assert block.shortcut is None
                assert isinstance(block.residual[0], nn.BatchNorm2d)
                assert isinstance(block.residual[1], nn.ReLU)
    widths = [
        (s[0].residual.conv1.in_channels, s[0].residual.conv2.out_channels, s[0].residual.conv3.out_channels)
        for s in backbone.stages
    ]
    assert widths == [(16, 16, 64), (64, 64, 128), (128, 128, 256)]
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 3 * 3 + 3
    assert all(c.bias is not None for c in convs)  # Keras Conv2D use_bias=True
    assert l2_parameters(backbone) == [c.weight for c in convs]


def test_keras_same_padding_for_stride_2_1x1_is_zero():
    # TF 'same': out = ceil(H / s), pad_total = max((out - 1) * s + k - H, 0).
    conv = nn.Conv2d(1, 1, 1, stride=2)
    for size in range(1, 40):
        out = math.ceil(size / 2)
        assert max((out - 1) * 2 + 1 - size, 0) == 0
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == out


def test_regression_head_sizes():
    assert count_parameters(RegressionHead(256, architecture="linear"))["total"] == 257
    assert count_parameters(RegressionHead(256, architecture="reference"))["total"] == 2_065
    assert RegressionHead(256).architecture == "reference"
    head = RegressionHead(256)
    outputs = head(torch.randn(3, 256))
    assert outputs.shape == (3, 1)
    torch.testing.assert_close(head.decode(outputs), outputs[:, 0])


BACKBONE_TOTAL = KERAS_TOTAL - 2_065  # 846,432


@pytest.mark.parametrize(
    "task, head, num_grades, head_total",
    [
        ("regression", "reference", None, (256 * 8 + 8) + (8 * 1 + 1)),  # 2,065: the reference
        ("regression", "linear", None, 256 + 1),
        ("classification", "linear", 9, 256 * 9 + 9),  # 2,313
        ("classification", "reference", 9, (256 * 8 + 8) + (8 * 9 + 9)),  # 2,137
        ("coral", "linear", 9, 256 + 8),  # one shared weight vector + K-1 biases: 264
        ("coral", "reference", 9, (256 * 8 + 8) + (8 + 8)),  # 2,072
        ("corn", "linear", 9, 256 * 8 + 8),  # K-1 independent outputs: 2,056
        ("corn", "reference", 9, (256 * 8 + 8) + (8 * 8 + 8)),  # 2,128
    ],
)
def test_head_parameter_counts_by_hand(task, head, num_grades, head_total):
    model = build_model(depth=11, task=task, head=head, num_grades=num_grades)
    assert count_parameters(model.head) == {"trainable": head_total, "non_trainable": 0, "total": head_total}


def test_full_model_count_with_another_head():
    model = build_model(depth=29, task="classification", num_grades=9)
    assert count_parameters(model)["total"] == BACKBONE_TOTAL + 2_313


def truncated_normal_std_factor(limit: float = 2.0) -> float:
    """Std of a standard normal cut to [-a, a]: sqrt(1 - 2 a phi(a) / (2 Phi(a) - 1))."""
    density = math.exp(-(limit**2) / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(limit / math.sqrt(2))
    return math.sqrt(1 - 2 * limit * density / mass)


def test_he_normal_init():
    assert truncated_normal_std_factor() == pytest.approx(0.8796, abs=1e-4)
    torch.manual_seed(0)
    backbone = ResNetV2(depth=29)
    conv = backbone.stages[2][0].residual.conv2  # (128, 128, 3, 3): 147,456 draws
    fan_in = 128 * 3 * 3
    std = math.sqrt(2 / fan_in)
    weight = conv.weight.detach()
    assert weight.std().item() == pytest.approx(std * truncated_normal_std_factor(), rel=0.02)
    assert weight.abs().max().item() <= 2 * std
    assert abs(weight.mean().item()) < 0.01 * std
    assert all(m.bias.abs().sum() == 0 for m in backbone.modules() if isinstance(m, nn.Conv2d))
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in norms)
    torch.manual_seed(0)
    dense = RegressionHead(4096).layers[0]  # 8 x 4096 draws
    assert dense.weight.std().item() == pytest.approx(math.sqrt(2 / 4096) * truncated_normal_std_factor(), rel=0.02)
    assert dense.bias.abs().sum() == 0
