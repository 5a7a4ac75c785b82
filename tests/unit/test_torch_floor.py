"""A torch whose torch.load(weights_only=True) can be made to run code is refused before any file is read."""

import tomllib
from pathlib import Path

import pytest
import torch

from imgrade.core.checkpoint import SAFE_TORCH, load_checkpoint, save_checkpoint
from imgrade.core.errors import CheckpointError
from imgrade.models.timm_backbone import read_state_dict

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.mark.parametrize("version", ["2.5.1", "2.5.1+cu124", "2.9.1+cpu", "1.13.1", "not-a-version"])
def test_an_unsafe_torch_is_refused_in_one_line_naming_the_file_and_the_fix(tmp_path, monkeypatch, version):
    save_checkpoint(tmp_path / "best.pt", {"model_state": {}})
    monkeypatch.setattr(torch, "__version__", version)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "best.pt")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "best.pt") in message and f"torch {version}" in message
    assert "CVE-2026-24747" in message and "pip install 'torch>=2.10'" in message


def test_pretrained_weights_are_refused_with_an_unsafe_torch(tmp_path, monkeypatch):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "w.pth")
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    with pytest.raises(CheckpointError, match="w.pth with torch 2.6.0"):
        read_state_dict(tmp_path / "w.pth")


@pytest.mark.parametrize("version", ["2.10.0", "2.10.0a0+git1234abc", "2.13.0+cpu", "3.0.0"])
def test_a_safe_torch_loads(tmp_path, monkeypatch, version):
    save_checkpoint(tmp_path / "best.pt", {"model_state": {"w": torch.ones(3)}})
    torch.save({"weight": torch.zeros(2)}, tmp_path / "w.pth")
    monkeypatch.setattr(torch, "__version__", version)
    assert torch.equal(load_checkpoint(tmp_path / "best.pt")["model_state"]["w"], torch.ones(3))
    assert torch.equal(read_state_dict(tmp_path / "w.pth")["weight"], torch.zeros(2))


def test_the_runtime_floor_is_the_one_pyproject_requires():
    train = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["train"]
    assert "torch>={}.{}".format(*SAFE_TORCH) in train
