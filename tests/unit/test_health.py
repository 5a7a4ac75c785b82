"""The end-of-training warnings: dead ReLUs in the reference head, near-constant predictions."""

import numpy as np
import torch

from imgrade.data.imageset import ImageSet
from imgrade.models.factory import build_model
from imgrade.pipeline.health import health_warnings
from imgrade.runtime.torch_engine import Outputs, TorchEngine


def _predictor(model):
    return TorchEngine(model.eval(), torch.zeros(3, 32, 32), list("ABC"), 32, torch.device("cpu"), {})


def _val_set(n=20):
    rng = np.random.default_rng(0)
    return ImageSet(
        rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 3, n).astype(np.float32),
        list("ABC"),
        [str(i) for i in range(n)],
    )


def test_dead_relus_and_constant_predictions_are_reported():
    torch.manual_seed(0)
    model = build_model(depth=11, task="regression", head="reference", num_grades=3)
    with torch.no_grad():
        model.head.layers[0].bias.fill_(-1e3)  # every hidden unit is negative for any input: all 8 are dead
    val = _val_set()
    outputs = Outputs(np.full(len(val), 1.0, np.float32), None, np.ones(len(val), np.int64))
    warnings = health_warnings(_predictor(model), val, outputs)
    assert any("8 of the head's 8 hidden ReLU units never fire" in w for w in warnings)
    assert any("near constant" in w for w in warnings)


def test_a_healthy_model_gets_no_warning():
    torch.manual_seed(0)
    model = build_model(depth=11, task="regression", head="reference", num_grades=3)
    with torch.no_grad():
        model.head.layers[0].bias.fill_(1e3)  # every unit fires
    val = _val_set()
    outputs = Outputs(val.targets + np.random.default_rng(1).normal(0, 0.3, len(val)).astype(np.float32), None, None)
    assert health_warnings(_predictor(model), val, outputs) == []
