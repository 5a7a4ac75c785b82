"""Fine-tuning: --init compatibility checks, weight loading, backbone lr scale, frozen backbone epochs."""

import pytest
import torch

from imgrade.config import ModelConfig, RunConfig, TrainConfig
from imgrade.core.checkpoint import load_checkpoint, save_checkpoint
from imgrade.core.errors import CheckpointError, ConfigError
from imgrade.models.factory import build_model
from imgrade.runtime.run_checkpoint import Checkpoint
from imgrade.training.loop import FitData, fit
from imgrade.training.optim import build_optimizer, set_lr
from imgrade.training.warm_start import load_init, plan_init

GRADES = ["2L", "L", "M", "S"]


def _source(tmp_path, depth=11, task="regression", head="auto", grades=GRADES, name="best.pt"):
    """A checkpoint as `imgrade train` writes it (the fields --init reads), and its model."""
    torch.manual_seed(1)
    model = build_model(depth, task, head, num_grades=len(grades) if grades else None)
    path = tmp_path / name
    config = {"model": {"depth": depth, "task": task, "head": head, "loss": "mse"}}
    save_checkpoint(path, {"config": config, "grade_names": grades, "model_state": model.state_dict()})
    return path, model


def _fresh(depth=11, task="regression", head="auto", grades=GRADES):
    torch.manual_seed(2)
    return build_model(depth, task, head, num_grades=len(grades) if grades else None), ModelConfig(
        depth=depth, task=task, head=head
    )


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("task", ["regression", "coral"])
def test_same_task_and_grades_load_backbone_and_head(tmp_path, task):
    path, source = _source(tmp_path, task=task)
    model, cfg = _fresh(task=task)
    model.head.init_from_targets(torch.tensor([0, 1, 1, 2, 3]).numpy())  # as pipeline does first: the source must win
    message = load_init(model, plan_init(tmp_path, cfg, GRADES))  # a run folder -> its best.pt
    assert message == f"init: backbone and head from {path}"
    assert _equal(model, source)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"grades": ["L", "2L", "M", "S"]}, "the grades are in another order (2L,L,M,S there, L,2L,M,S here)"),
        ({"task": "classification"}, "the task differs (regression there, classification here)"),
        ({"head": "linear"}, "the head differs (reference there, linear here)"),
        ({"grades": None}, "the target is continuous here, so the head's scale need not carry over"),
    ],
)
def test_otherwise_the_backbone_loads_and_the_head_starts_fresh(tmp_path, change, reason):
    path, source = _source(tmp_path)
    model, cfg = _fresh(**change)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    message = load_init(model, plan_init(path, cfg, change.get("grades", GRADES)))
    assert message == f"init: backbone from {path}; fresh head because {reason}"
    assert _equal(model.backbone, source.backbone)
    assert all(torch.equal(head_before[k], v) for k, v in model.head.state_dict().items())


def test_a_continuous_source_gives_a_fresh_head(tmp_path):
    path, source = _source(tmp_path, grades=None)
    model, cfg = _fresh()
    assert "fresh head because the target is continuous there" in load_init(model, plan_init(path, cfg, GRADES))
    assert _equal(model.backbone, source.backbone)


def test_another_depth_is_refused_with_the_fix(tmp_path):
    path, _ = _source(tmp_path, depth=20)
    _, cfg = _fresh(depth=11)
    with pytest.raises(ConfigError) as error:
        plan_init(path, cfg, GRADES)
    assert str(error.value) == f"--init {path} has depth 20 but this run has depth 11: set --depth 20"


def test_other_grade_names_are_refused_listing_both(tmp_path):
    path, _ = _source(tmp_path)
    _, cfg = _fresh(grades=["A", "B", "C"])
    with pytest.raises(ConfigError) as error:
        plan_init(path, cfg, ["A", "B", "C"])
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "grades 2L,L,M,S" in message and "this data has grades A,B,C" in message


def test_a_backbone_that_does_not_fit_is_a_config_error(tmp_path):
    path, source = _source(tmp_path)
    payload = load_checkpoint(path)
    first = next(k for k in payload["model_state"] if k.startswith("backbone."))
    payload["model_state"][first] = torch.zeros(1)  # another shape, as from another architecture
    save_checkpoint(path, payload)
    model, cfg = _fresh()
    with pytest.raises(ConfigError, match=f"--init {path}: its backbone does not fit"):
        load_init(model, plan_init(path, cfg, GRADES))


def test_a_missing_source_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        plan_init(tmp_path / "nowhere", ModelConfig(depth=11), GRADES)


# ----------------------------------------------------------------------------- optimizer


def test_backbone_lr_scale_splits_the_groups_and_scales_their_lr():
    model, _ = _fresh()
    plain = build_optimizer(model, 1e-3, 1e-4)
    assert len(plain.param_groups) == 2
    optimizer = build_optimizer(model, 1e-3, 1e-4, backbone_lr_scale=0.1)
    assert len(optimizer.param_groups) == 4
    backbone = {id(p) for p in model.backbone.parameters()}
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter once
    set_lr(optimizer, 1e-2)
    for group in optimizer.param_groups[:2]:  # the backbone's: conv kernels, the rest
        assert all(id(p) in backbone for p in group["params"]) and group["lr"] == pytest.approx(1e-3)
    for group in optimizer.param_groups[2:]:  # the head's
        assert not any(id(p) in backbone for p in group["params"]) and group["lr"] == 1e-2
    assert [len(g["params"]) > 0 for g in optimizer.param_groups] == [True, True, False, True]  # the head has no conv
    # the same config builds the same structure: a resumed run loads the saved state
    build_optimizer(model, 1e-3, 1e-4, backbone_lr_scale=0.1).load_state_dict(optimizer.state_dict())


# ----------------------------------------------------------------------------- frozen backbone


def _data(n=24):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g).float()
    return FitData(x[:16], y[:16], x[16:], y[16:], torch.full((3, 32, 32), 0.5))


def _meta() -> Checkpoint:
    """What a training's checkpoints hold beside the weights, for ``fit`` to write last.pt with."""
    return Checkpoint(RunConfig(), GRADES, 32, torch.full((3, 32, 32), 0.5), model_state={})


def _snapshots():
    """on_epoch_end that keeps a copy of the model's weights and buffers after each epoch."""
    states = []

    def keep(model):
        return lambda history: states.append({k: v.clone() for k, v in model.state_dict().items()})

    return states, keep


def _part(state, prefix, buffers=False):
    names = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if k.startswith(prefix) and k.endswith(names) == buffers}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_epochs_keep_the_backbone_weights_but_train_the_head_and_batchnorm(tmp_path):
    model, _ = _fresh()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=2, batch_size=8, init="pretrained", freeze_backbone_epochs=1, device="cpu")
    states, keep = _snapshots()
    fit(model, _data(), cfg, torch.device("cpu"), tmp_path, _meta(), on_epoch_end=keep(model))
    frozen, unfrozen = states
    assert _same(_part(frozen, "backbone."), _part(start, "backbone."))  # bit for bit
    assert not _same(_part(frozen, "head."), _part(start, "head."))
    assert not _same(_part(frozen, "backbone.", buffers=True), _part(start, "backbone.", buffers=True))
    assert not _same(_part(unfrozen, "backbone."), _part(frozen, "backbone."))  # epoch 2 trains it
    assert all(p.requires_grad for p in model.parameters())


def test_a_resumed_run_freezes_by_epoch_number(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=8, init="pretrained", freeze_backbone_epochs=2, device="cpu")

    def stop(history):
        raise KeyboardInterrupt

    model, _ = _fresh()
    with pytest.raises(KeyboardInterrupt):
        fit(model, _data(), cfg, torch.device("cpu"), tmp_path, _meta(), on_epoch_end=stop)  # after epoch 1
    last = Checkpoint.load(tmp_path / "last.pt")
    model, _ = _fresh()
    states, keep = _snapshots()
    fit(model, _data(), cfg, torch.device("cpu"), tmp_path, _meta(), resume=last, on_epoch_end=keep(model))
    assert _same(_part(states[0], "backbone."), _part(last.model_state, "backbone."))  # epoch 2: still frozen
    assert not _same(_part(states[1], "backbone."), _part(states[0], "backbone."))  # epoch 3: trained
