"""`--device auto` picks CUDA, then Apple's MPS, then the CPU; a device that is not there is one clear line.

No Mac or GPU runs these tests: the availability checks are replaced, the choice itself is real.
"""

import pytest
import torch

from imgrade.core.device import resolve_device
from imgrade.core.errors import ConfigError


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(cuda, mps, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto").type == expected


def test_auto_is_the_cpu_on_a_torch_build_without_the_mps_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.backends, "mps")
    assert resolve_device("auto") == torch.device("cpu")


def test_mps_by_name_is_taken_where_present_and_refused_in_one_line_where_not(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device mps asked for Apple's MPS .*use --device cpu"):
        resolve_device("mps")


def test_an_unknown_device_names_the_choices():
    with pytest.raises(ConfigError, match="unknown device 'tpu'.*cuda:N or mps"):
        resolve_device("tpu")
