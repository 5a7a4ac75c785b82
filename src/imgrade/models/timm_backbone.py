"""The ``timm`` backbone family: ``--backbone timm:NAME``, any of ``timm.list_models()``.

``timm.create_model(NAME, num_classes=0)`` (timm is the optional extra ``imgrade[timm]``),
optionally started from pretrained weights (``--pretrained FILE`` or ``hub``), behind the
``forward_features`` and ``num_features`` every backbone has. Registered in
``imgrade.core.registry``.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from imgrade.core.checkpoint import require_safe_torch
from imgrade.core.errors import ConfigError

INSTALL_TIMM = "pip install 'imgrade[timm]'"
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel std of ImageNet photos in [0, 1], for timm models whose config names none."""
HUB = "hub"
"""``--pretrained hub``: timm's own download of the model's pretrained weights."""
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def import_timm():
    """timm, or a one-line ConfigError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ConfigError(f"--backbone timm:NAME needs timm: {INSTALL_TIMM}") from None
    except RuntimeError as e:
        # PyPI's torchvision (which timm imports) is built against PyPI's CUDA torch; beside the
        # CPU build of torch its operators fail to register: "operator torchvision::nms does not exist"
        raise ConfigError(
            f"timm is installed but cannot be imported ({' '.join(str(e).split())[:120]}): install the torchvision "
            f"built for torch {torch.__version__} (e.g. from PyTorch's CPU index), then {INSTALL_TIMM}"
        ) from None
    return timm


def check_timm(name: str, pretrained: str | None = None) -> None:
    """Fail fast, before any data is read: timm missing, an unknown timm name, a missing weights file.

    Raises:
        ConfigError: any of those, in one line with the fix.
    """
    timm = import_timm()
    if not name.startswith(("hf-hub:", "hf_hub:")) and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(f'timm:{c}' for c in close)}? " if close else ""
        raise ConfigError(
            f"timm has no model {name!r}: {hint}set --backbone timm:NAME with a name from timm.list_models() "
            "(python -c \"import timm; print(timm.list_models('resnet*'))\")"
        )
    if pretrained not in (None, HUB) and not Path(pretrained).is_file():
        raise ConfigError(
            f"--pretrained {pretrained} does not exist: pass a .pth, .pt or .safetensors state dict of timm:{name}, "
            "or 'hub' to download timm's weights"
        )


class TimmBackbone(nn.Module):
    """A timm model without its classifier, with the per-channel std scaling of its pretraining.

    imgrade feeds the network ``x / 255`` minus the training set's per-pixel mean image, which
    centres the photos as ImageNet's per-channel mean would, but leaves their spread at about
    0.25. Networks pretrained on ImageNet saw ``(x - mean) / std`` per channel, spread about 1;
    dividing by that std here, inside the module, puts pretrained weights on the scale they
    learned, and travels into the ONNX export with the network so no runtime needs to know.
    A network trained from scratch gets the same scaling, which costs nothing and keeps one
    input convention for every timm backbone.
    """

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        std = (getattr(model, "pretrained_cfg", None) or {}).get("std") or IMAGENET_STD
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.num_features = int(model.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> pooled features (B, num_features)."""
        return self.model(x / self.std)  # num_classes=0: timm's forward ends at the pooled features

    forward = forward_features


def build_timm(name: str, *, pretrained: str | None = None, image_size: int | None = None, **_) -> nn.Module:
    """Build ``timm.create_model(name)`` without its classifier, as a ``TimmBackbone``.

    Args:
        name: a name from ``timm.list_models()`` (or "hf-hub:...").
        pretrained: a state dict file (.pth, .pt, .bin, .safetensors), "hub" for timm's own
            download, or None for random weights.
        image_size: the input size, for networks built for one size (vision transformers take it
            as ``img_size``; convolutional ones take any size). None: the network's own size, unchecked.

    Raises:
        ConfigError: timm not installed, an unknown name, weights that cannot be had or do not
            fit, or an image size the network cannot take.
    """
    check_timm(name, pretrained)
    timm = import_timm()
    if pretrained == HUB:
        try:
            model = _create(timm, name, image_size, pretrained=True)
        except Exception as e:  # huggingface_hub, httpx, urllib and torch.hub raise many kinds offline
            cause = " ".join(str(e).split())[:160] or type(e).__name__
            if "No pretrained weights exist" in cause:
                raise ConfigError(
                    f"timm has no pretrained weights for {name}: drop --pretrained, or pass --pretrained FILE"
                ) from None
            raise ConfigError(
                f"could not download {name}'s weights (offline?): download them on a machine online and pass "
                f"--pretrained FILE ({type(e).__name__}: {cause})"
            ) from None
    else:
        model = _create(timm, name, image_size, pretrained=False)
        if pretrained is not None:
            load_weights(model, Path(pretrained), name)
    if image_size is not None:
        _check_image_size(model, name, image_size)
    # oneDNN and cuDNN convolutions run fastest on NHWC data, as for the reference (resnet_v2.py)
    model.to(memory_format=torch.channels_last)
    return TimmBackbone(model, name)


def _create(timm, name: str, image_size: int | None, **kwargs) -> nn.Module:
    """``timm.create_model`` without a classifier, built for ``image_size`` where the network takes one."""
    if image_size is not None:
        try:
            return timm.create_model(name, num_classes=0, img_size=image_size, **kwargs)
        except TypeError:  # convolutional networks take any size and have no img_size argument
            pass
    return timm.create_model(name, num_classes=0, **kwargs)


def _check_image_size(model: nn.Module, name: str, image_size: int) -> None:
    """Run one blank image through ``model``, so a size it cannot take fails now, in one line."""
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))  # eval: the BatchNorm statistics stay as they are
    except Exception as e:  # timm asserts, or a convolution finds its input too small
        size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, "?", "?"))[-1]
        cause = " ".join(str(e).split())[:120] or type(e).__name__
        raise ConfigError(
            f"timm:{name} does not take {image_size}x{image_size} images ({cause}): set --image-size {size}, "
            "or choose another --backbone"
        ) from None
    finally:
        model.train(training)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a torch state dict (also under "state_dict" or "model").

    Raises:
        ConfigError: not readable as either, or an imgrade checkpoint (those go to --init).
        CheckpointError: a torch file, and the installed torch is too old to read it safely.
    """
    if path.suffix != ".safetensors":
        require_safe_torch(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # installed with timm

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # nothing in it can run code
    except Exception as e:  # torch and safetensors raise many types for a bad file; all mean the same here
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise ConfigError(
            f"--pretrained {path} is not a readable state dict ({reason}): pass a .pth, .pt or .safetensors weights file"
        ) from None
    if isinstance(state, dict) and "model_state" in state and "config" in state:
        raise ConfigError(f"--pretrained {path} is an imgrade checkpoint: start from it with --init {path} instead")
    for key in ("state_dict", "model", "state_dict_ema"):  # the containers training scripts save
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"--pretrained {path} holds no state dict of tensors: pass the file torch.save(model.state_dict()) wrote"
        )
    # weights saved from a DistributedDataParallel or torch.compile'd model carry a prefix
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: Path, model_name: str) -> None:
    """Copy the state dict in ``path`` into the timm ``model`` (built without a classifier).

    The file's classifier (e.g. ``fc.weight`` of an ImageNet model) is left out: imgrade's head
    replaces it. Every other tensor must be there, by name and shape.

    Raises:
        ConfigError: the file does not fit: the counts of missing, unexpected and reshaped tensors.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ""
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {
        k: v
        for k, v in state.items()
        if k in expected or not any(c and (k == c or k.startswith(c + ".")) for c in classifiers)
    }
    misfit = state_dict_misfit(expected, state)
    if misfit:
        raise ConfigError(
            f"--pretrained {path} does not fit timm:{model_name} ({misfit}): "
            f"pass weights saved from timm.create_model({model_name!r}), or set --backbone to the model they were saved from"
        )
    model.load_state_dict(state)


def state_dict_misfit(expected: dict, state: dict) -> str | None:
    """What keeps ``state`` from loading strictly where ``expected`` is, in words; None when it fits.

    >>> import torch
    >>> state_dict_misfit({"a": torch.zeros(2), "b": torch.zeros(1)}, {"a": torch.zeros(3), "c": torch.zeros(1)})
    '1 missing, 1 unexpected, 1 reshaped of its 2 tensors, e.g. b'
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if not (missing or unexpected or reshaped):
        return None
    counts = ", ".join(
        f"{len(keys)} {kind}"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("reshaped", reshaped))
        if keys
    )
    return f"{counts} of its {len(expected)} tensors, e.g. {(missing + unexpected + reshaped)[0][:80]}"
