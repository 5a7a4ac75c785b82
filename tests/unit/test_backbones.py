"""`--backbone` and `--pretrained`: bad input is refused in one line, before anything is written in --out."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgrade.cli import main
from imgrade.core.errors import ConfigError
from imgrade.models.factory import build_model
from imgrade.models.timm_backbone import import_timm

TINY = "test_resnet"
"""timm's smallest ResNet (about 0.5 M parameters), registered for timm's own tests."""


def _timm():
    """timm, or a skip saying why it cannot be used here."""
    try:
        return import_timm()
    except ConfigError as e:
        pytest.skip(str(e))


def _refused(capsys, *argv: str) -> str:
    """Run `imgrade train ARGV`; assert exit 2 and a one-line error after the progress lines; return it."""
    capsys.readouterr()
    assert main(["train", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("imgrade: error: ")]
    assert errors == [lines[-1]] and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


def test_without_timm_a_timm_backbone_says_how_to_install_it(synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` meets where timm is not installed
    out = tmp_path / "run"
    err = _refused(capsys, "--data", str(synth_dir), "--backbone", f"timm:{TINY}", "--epochs", "1", "--out", str(out))
    assert "pip install 'imgrade[timm]'" in err
    assert not out.exists()


def test_pretrained_with_the_reference_backbone_points_to_init(synth_dir, tmp_path, capsys):
    weights = tmp_path / "w.pth"
    torch.save({}, weights)
    out = tmp_path / "run"
    err = _refused(capsys, "--data", str(synth_dir), "--pretrained", str(weights), "--epochs", "1", "--out", str(out))
    assert "--pretrained is for --backbone timm:NAME" in err and "--init RUN" in err
    assert not out.exists()


def test_a_backbone_without_the_timm_prefix_is_refused(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    err = _refused(capsys, "--data", str(synth_dir), "--backbone", "resnet18", "--out", str(out))
    assert "unknown backbone 'resnet18'" in err and "set --backbone to one of reference, timm:NAME" in err
    assert not out.exists()


def test_a_timm_backbone_without_a_model_name_is_refused(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    err = _refused(capsys, "--data", str(synth_dir), "--backbone", "timm:", "--out", str(out))
    assert "backbone 'timm:' names no model: set --backbone timm:NAME" in err
    assert not out.exists()


def test_an_unknown_timm_name_suggests_close_ones(synth_dir, tmp_path, capsys):
    _timm()
    out = tmp_path / "run"
    err = _refused(capsys, "--data", str(synth_dir), "--backbone", "timm:test_resnett", "--out", str(out))
    assert "timm has no model 'test_resnett'" in err and f"timm:{TINY}" in err
    assert not out.exists()


def test_a_missing_weights_file_is_named(synth_dir, tmp_path, capsys):
    _timm()
    out, weights = tmp_path / "run", tmp_path / "nowhere.pth"
    err = _refused(
        capsys, "--data", str(synth_dir), "--backbone", f"timm:{TINY}", "--pretrained", str(weights), "--out", str(out)
    )
    assert f"--pretrained {weights} does not exist" in err
    assert not out.exists()


def test_weights_of_another_architecture_are_refused_with_what_differs(synth_dir, tmp_path, capsys):
    timm = _timm()
    weights = tmp_path / "efficientnet.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    out = tmp_path / "run"
    err = _refused(
        capsys,
        "--data",
        str(synth_dir),
        "--backbone",
        f"timm:{TINY}",
        "--pretrained",
        str(weights),
        "--epochs",
        "1",
        "--out",
        str(out),
    )
    expected = len(timm.create_model(TINY, num_classes=0).state_dict())
    assert f"--pretrained {weights} does not fit timm:{TINY} (" in err
    assert "missing" in err and "unexpected" in err and f"of its {expected} tensors" in err
    assert not out.exists()


def test_an_imgrade_checkpoint_as_pretrained_points_to_init(synth_dir, tmp_path, capsys):
    _timm()
    weights = tmp_path / "best.pt"
    torch.save({"format_version": 1, "config": {}, "model_state": {}}, weights)
    out = tmp_path / "run"
    err = _refused(
        capsys, "--data", str(synth_dir), "--backbone", f"timm:{TINY}", "--pretrained", str(weights), "--out", str(out)
    )
    assert f"is an imgrade checkpoint: start from it with --init {weights}" in err


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_are_loaded_into_the_backbone(tmp_path, suffix):
    timm = _timm()
    torch.manual_seed(7)
    source = timm.create_model(TINY)  # with its ImageNet classifier, as a downloaded file has
    state = source.state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(8)  # other random weights, should the file be ignored
    model = build_model(task="coral", num_grades=4, backbone=f"timm:{TINY}", pretrained=str(path))
    loaded = model.backbone.model.state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    fresh = build_model(task="coral", num_grades=4, backbone=f"timm:{TINY}").backbone.model.state_dict()
    assert not torch.equal(fresh["conv1.0.weight"], state["conv1.0.weight"])


def test_the_backbone_divides_by_the_pretraining_std():
    _timm()  # skips without timm
    model = build_model(depth=11, task="regression", backbone=f"timm:{TINY}").eval()
    x = torch.rand(2, 3, 32, 32) - 0.5
    std = torch.tensor(model.backbone.model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model.backbone.forward_features(x), model.backbone.model(x / std))
        assert model.features(x).shape == (2, model.backbone.num_features)


def test_hub_weights_offline_say_to_pass_a_file(synth_dir, tmp_path):
    _timm()
    out = tmp_path / "run"
    # offline for huggingface_hub, with an empty cache: it refuses before touching the network
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgrade",
            "train",
            "--data",
            str(synth_dir),
            "--backbone",
            f"timm:{TINY}",
            "--pretrained",
            "hub",
            "--epochs",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith(
        f"imgrade: error: could not download {TINY}'s weights (offline?): download them on a machine online and pass --pretrained FILE"
    )
    assert not out.exists()


def _source_checkpoint(tmp_path: Path, model: dict) -> Path:
    from imgrade.core.checkpoint import save_checkpoint

    path = tmp_path / "source.pt"
    save_checkpoint(path, {"config": {"model": model}, "model_state": {}, "grade_names": None})
    return path


def test_init_from_a_run_with_another_backbone_names_it(tmp_path):
    from imgrade.config import ModelConfig
    from imgrade.training.warm_start import plan_init

    source = _source_checkpoint(
        tmp_path, {"backbone": f"timm:{TINY}", "depth": 29, "task": "regression", "head": "auto"}
    )
    with pytest.raises(
        ConfigError, match=f"has backbone timm:{TINY} but this run has reference: set --backbone timm:{TINY}"
    ):
        plan_init(source, ModelConfig(), None)


def test_init_from_a_run_saved_before_backbones_reads_it_as_the_reference(tmp_path):
    from imgrade.config import ModelConfig
    from imgrade.training.warm_start import plan_init

    source = _source_checkpoint(tmp_path, {"depth": 11, "task": "regression", "head": "auto"})  # no backbone key
    with pytest.raises(ConfigError, match="has depth 11 but this run has depth 29: set --depth 11"):
        plan_init(source, ModelConfig(), None)
    assert plan_init(source, ModelConfig(depth=11), None).fresh_head is not None


def test_a_transformer_is_built_for_the_image_size():
    _timm()
    model = build_model(task="classification", num_grades=3, backbone="timm:vit_tiny_patch16_224", image_size=48).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 3)  # built for 224 px, it would refuse 48
