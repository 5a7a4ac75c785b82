"""Weight averaging (training/ema.py) against hand-computed numbers, and its config check."""

import pytest
import torch

from imgrade.config import TrainConfig
from imgrade.core.errors import ConfigError
from imgrade.training.ema import ModelEma, ema_decay


def _tiny() -> torch.nn.Module:
    """One weight and one BatchNorm: a parameter, float buffers and an integer buffer."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    return model


def test_warmup_formula():
    assert ema_decay(0.999, 0) == 1 / 10  # the first update keeps a tenth of the initial weights
    assert ema_decay(0.999, 1) == 2 / 11
    assert ema_decay(0.999, 8) == 9 / 18
    assert ema_decay(0.5, 8) == 0.5  # the set decay caps the warm-up
    assert ema_decay(0.999, 100) == 101 / 110  # 0.999 is reached only near step 9000
    assert ema_decay(0.999, 10_000) == 0.999


def test_two_updates_by_hand():
    model = _tiny()
    ema = ModelEma(model, decay=0.15)
    weight, running_mean = model[0].weight, model[1].running_mean
    with torch.no_grad():
        weight.fill_(2.0)
        running_mean.fill_(10.0)
        model[1].num_batches_tracked.fill_(1)
    ema.update()  # step 0: decay min(0.15, 1/10) = 0.1
    state = ema.state_dict()
    assert state["0.weight"].item() == pytest.approx(0.1 * 1.0 + 0.9 * 2.0)  # 1.9
    assert state["1.running_mean"].item() == pytest.approx(0.1 * 0.0 + 0.9 * 10.0)  # 9.0
    assert state["1.running_var"].item() == pytest.approx(1.0)  # unchanged buffer stays put
    with torch.no_grad():
        weight.fill_(4.0)
        running_mean.fill_(20.0)
        model[1].num_batches_tracked.fill_(2)
    ema.update()  # step 1: decay min(0.15, 2/11) = 0.15
    state = ema.state_dict()
    assert state["0.weight"].item() == pytest.approx(0.15 * 1.9 + 0.85 * 4.0)  # 3.685
    assert state["1.running_mean"].item() == pytest.approx(0.15 * 9.0 + 0.85 * 20.0)  # 18.35
    assert state["1.num_batches_tracked"].item() == 2  # an integer buffer is copied, not averaged
    assert ema.steps == 2
    assert weight.item() == 4.0  # the model keeps its own weights


def test_applied_swaps_the_average_in_and_the_live_weights_back_bit_for_bit():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = ModelEma(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) / 3)  # live weights not exactly representable as their average
    ema.update()
    live = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.applied():
        inside = model.state_dict()
        assert all(torch.equal(inside[k], v) for k, v in ema.state_dict().items())
        assert not torch.equal(inside["0.weight"], live["0.weight"])
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in live.items())


def test_resumed_average_continues_exactly():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    steps = [torch.randn(2, 3) for _ in range(4)]

    def run(ema, moves):
        for move in moves:
            with torch.no_grad():
                model.weight.copy_(move)
            ema.update()

    whole = ModelEma(model, decay=0.7)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    run(whole, steps)
    model.load_state_dict(start)
    first = ModelEma(model, decay=0.7)
    run(first, steps[:2])
    second = ModelEma(model, decay=0.7)
    saved = first.checkpoint()
    second.load_checkpoint(saved["ema_state"], saved["ema_steps"])
    run(second, steps[2:])
    assert second.steps == 4
    assert all(torch.equal(second.state_dict()[k], v) for k, v in whole.state_dict().items())


@pytest.mark.parametrize("value", [1.5, 1.0, -0.1, float("nan")])
def test_ema_outside_zero_one_names_the_flag(value):
    with pytest.raises(ConfigError, match=r"train.ema .* must be in \(0, 1\), e.g. 0.999, or 0 for none: set --ema"):
        TrainConfig(ema=value)


def test_ema_zero_is_off_and_a_decay_is_accepted():
    assert TrainConfig().ema == 0.0
    assert TrainConfig(ema=0.999).ema == 0.999
