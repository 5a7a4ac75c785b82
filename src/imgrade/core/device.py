"""Device choice, seeding and determinism."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from imgrade.core.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then Apple's mps, then cpu; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are taken as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use --device auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA but this torch build sees no GPU: use --device cpu")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(
            f"--device {name} asked for Apple's MPS but this machine or torch build has none: use --device cpu"
        )
    return device


def _mps_available() -> bool:
    """Whether Apple's Metal backend (MPS) can run here; torch builds without it lack the check."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool) -> None:
    """Ask torch for deterministic kernels (slower on GPU; CPU runs are reproducible either way)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
