"""The reference backbone: the Keras CIFAR-10 example's ``resnet_v2``, layer for layer in PyTorch.

Source: keras-team/keras ``examples/cifar10_resnet.py`` (He et al. 2016, "Identity Mappings in
Deep Residual Networks"): a pre-activation bottleneck ResNet of depth 9n+2. What "exactly" means:

- every conv has a bias (Keras ``Conv2D`` default ``use_bias=True``);
- BatchNorm uses Keras defaults: momentum 0.99 (PyTorch ``momentum=0.01``) and epsilon 1e-3;
- padding 'same': 3x3 convs pad 1; the stride-2 1x1 convs need none (TF 'same' pads
  ``max((ceil(H/2) - 1) * 2 + 1 - H, 0) = 0`` for every H, so it samples rows 0, 2, 4, ... as
  PyTorch's ``padding=0`` does);
- the projection shortcut reads the raw block input (not the pre-activated one, unlike timm);
- he_normal init as in the Keras 2.1 of the example (see ``he_normal_``); biases 0; BN 1 and 0.

At depth 29 the backbone has 846,432 Keras parameters (841,216 trainable + 5,216 BN running
statistics); the regression head adds 2,065, for the reference's 848,497.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from imgrade.core.errors import ConfigError

# Keras BatchNormalization defaults; Keras' momentum is the weight of the old running value.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3


def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Fill a conv or dense weight in place the way the reference's Keras ``he_normal`` did.

    Keras 2.1 (the example's era) drew from a normal with std ``sqrt(2 / fan_in)`` cut at two of
    those std, so the values' own std is about 0.88 of it. (Keras >= 2.2.3, tf.keras and Keras 3
    divide by 0.8796 first so that the truncated values have std ``sqrt(2 / fan_in)``.)

    Args:
        weight: a PyTorch weight, output channels first: (out, in) or (out, in, kh, kw).

    Returns:
        The same tensor.

    >>> w = he_normal_(torch.empty(16, 8, 3, 3))
    >>> bool(w.abs().max() <= 2 * (2 / (8 * 3 * 3)) ** 0.5)
    True
    """
    fan_in = weight[0].numel()  # in * kh * kw; the same count Keras uses for (kh, kw, in, out)
    std = (2.0 / fan_in) ** 0.5
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def init_keras_(module: nn.Module) -> None:
    """Initialise every conv, dense and BatchNorm layer below ``module`` as Keras does."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            he_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class PreActBottleneck(nn.Module):
    """[BN-ReLU-conv1x1(mid)] -> [BN-ReLU-conv3x3(mid)] -> [BN-ReLU-conv1x1(out)], plus a shortcut.

    Args:
        in_channels: channels of the block input.
        mid_channels: bottleneck width (the stage's ``num_filters_in`` in the reference).
        out_channels: channels of the block output.
        stride: stride of the first 1x1 conv and of the projection shortcut.
        preactivate: False only for the network's first block, whose input already went through
            the stem's BN-ReLU, so the reference starts it directly with the conv.
        project: use a 1x1 conv shortcut (no BN, no activation); else the identity.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        stride: int = 1,
        preactivate: bool = True,
        project: bool = False,
    ) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        if preactivate:
            layers += [("norm1", _batch_norm(in_channels)), ("act1", nn.ReLU(inplace=True))]
        layers += [
            ("conv1", nn.Conv2d(in_channels, mid_channels, 1, stride=stride)),
            ("norm2", _batch_norm(mid_channels)),
            ("act2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(mid_channels, mid_channels, 3, padding=1)),
            ("norm3", _batch_norm(mid_channels)),
            ("act3", nn.ReLU(inplace=True)),
            ("conv3", nn.Conv2d(mid_channels, out_channels, 1)),
        ]
        self.residual = nn.Sequential(OrderedDict(layers))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.residual(x)  # (B, out, H / stride, W / stride)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return shortcut + y


class ResNetV2(nn.Module):
    """The reference pre-activation bottleneck ResNet, without its classifier.

    Args:
        depth: 9n+2 with n >= 1 (11, 20, 29, 38, ...); n blocks per stage, 3 stages.
        in_channels: channels of the input images.

    Raises:
        ConfigError: ``depth`` is not 9n+2.

    >>> model = ResNetV2(depth=11)
    >>> model.forward_features(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 256])
    """

    def __init__(self, depth: int = 29, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 11 or (depth - 2) % 9 != 0:
            raise ConfigError(f"model depth {depth} is not 9n+2 (11, 20, 29, 38, ...): set --depth to one of those")
        self.depth = depth
        blocks_per_stage = (depth - 2) // 9

        width = 16  # the reference's num_filters_in
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_channels, width, 3, padding=1),
                norm=_batch_norm(width),
                act=nn.ReLU(inplace=True),
            )
        )
        stages = []
        channels = width  # channels of the running feature map x
        for stage in range(3):
            out_width = width * 4 if stage == 0 else width * 2  # 64, 128, 256
            blocks = []
            for block in range(blocks_per_stage):
                first = block == 0
                blocks.append(
                    PreActBottleneck(
                        channels,
                        width,
                        out_width,
                        stride=2 if first and stage > 0 else 1,
                        preactivate=not (first and stage == 0),
                        project=first,
                    )
                )
                channels = out_width
            stages.append(nn.Sequential(*blocks))
            width = out_width
        self.stages = nn.Sequential(*stages)
        self.norm = _batch_norm(channels)
        self.act = nn.ReLU(inplace=True)
        # AveragePooling2D(8) on the 8x8 map of a 32x32 input; a global mean for other sizes.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.num_features = channels
        init_keras_(self)
        # oneDNN (CPU) and cuDNN (GPU) convolutions run fastest on NHWC ("channels_last") data, and
        # with the weights in that layout every conv writes its output in it too. On 2 CPU cores
        # training went 1.4x and batch-256 inference 1.3x faster; the results agree with the
        # contiguous layout to float rounding. Set after the initialisation, so the values stay
        # the seed's.
        self.to(memory_format=torch.channels_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> pooled features (B, num_features)."""
        x = self.stem(x)  # (B, 16, H, W)
        x = self.stages(x)  # (B, 256, H / 4, W / 4)
        x = self.act(self.norm(x))
        return self.flatten(self.pool(x))  # (B, 256)

    forward = forward_features


def l2_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The conv kernels, the parameters the reference regularises with ``l2(1e-4)``.

    Keras ``kernel_regularizer=l2(1e-4)`` adds ``1e-4 * sum(w ** 2)`` to the loss, whose gradient
    is ``2e-4 * w``; ``torch.optim.Adam`` with ``weight_decay=2e-4`` adds exactly that to the
    gradient, so put these in an Adam parameter group with ``weight_decay=2e-4`` (Adam, not AdamW:
    decoupled decay is a different thing). Dense kernels, biases and BN are not regularised.

    >>> len(l2_parameters(ResNetV2(depth=11)))  # stem + 3 stages x (3 convs + 1 projection)
    13
    """
    return [layer.weight for layer in module.modules() if isinstance(layer, nn.Conv2d)]
