"""One registry of heads: a head registered in one place trains, exports and grades everywhere.

Its backbones are tested in test_backbone_registry.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from imgrade.cli import main
from imgrade.config import RunConfig
from imgrade.core.errors import ConfigError
from imgrade.core.registry import head_entry, register_head, task_names, unregister_head
from imgrade.data.synthetic import generate_cucumbers
from imgrade.models.factory import build_model
from imgrade.models.heads import ClassificationHead
from imgrade.pipeline import export
from imgrade.runtime import load_grader
from imgrade.runtime.onnx_engine import OnnxEngine


class TemperedHead(ClassificationHead):
    """Classification whose logits are divided by a fixed temperature: softer probabilities."""

    name = "tempered"
    temperature = 3.0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features) / self.temperature  # (B, K)


@pytest.fixture
def tempered():
    # the one place the new head is declared
    register_head("tempered", TemperedHead, "classification with softened logits", rule="most probable grade")
    yield "tempered"
    unregister_head("tempered")


def test_a_registered_head_trains_exports_and_grades_with_onnx(tempered, synth_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "tempered (classification with softened logits)" in " ".join(capsys.readouterr().out.split())
    run = tmp_path / "run"
    assert (
        main(
            ["train", "--data", str(synth_dir), "--task", tempered, "--epochs", "2", "--depth", "11", "--out", str(run)]
        )
        == 0
    )
    assert "task: tempered" in (run / "config.yaml").read_text()

    model = load_grader(run)
    assert isinstance(model.model.head, TemperedHead) and model.rule == "most probable grade"
    out = tmp_path / "tempered.onnx"
    summary = export(run, out=out)
    assert summary["outputs"][:4] == ["score", "probabilities", "native", "grade"]

    onnx_grader = OnnxEngine.from_file(out)
    images = generate_cucumbers(24, seed=7).imageset.images
    expected, got = model.outputs(images), onnx_grader.outputs(images)
    assert onnx_grader.task == "tempered" and onnx_grader.rule == "most probable grade"
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-4)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-4)
    np.testing.assert_array_equal(got.native, expected.native)
    # the temperature is in the graph: probabilities are those of the scaled logits
    with torch.no_grad():
        logits = model.model(torch.zeros(1, 3, 32, 32))
    torch.testing.assert_close(model.model.probabilities(logits), torch.softmax(logits, dim=1))


def test_unregistering_removes_the_task_everywhere(tempered):
    assert tempered in task_names()
    RunConfig.from_dict({"model": {"task": tempered}})
    unregister_head(tempered)
    assert tempered not in task_names()
    with pytest.raises(ConfigError, match="unknown task 'tempered'.*--task"):
        RunConfig.from_dict({"model": {"task": tempered}})
    with pytest.raises(ConfigError, match="unknown task 'tempered'"):
        build_model(depth=11, task=tempered, num_grades=3)


def test_registration_mistakes_are_one_line_errors(tempered):
    with pytest.raises(ConfigError, match="already registered"):
        register_head("tempered", TemperedHead, "again")
    with pytest.raises(ConfigError, match="module:Class"):
        register_head("nowhere", "imgrade.models.heads.ClassificationHead", "no colon")
    register_head("misnamed", TemperedHead, "a class whose name is another task's")
    register_head("missing", "imgrade.models.heads:NoSuchHead", "a class that is not there")
    try:
        with pytest.raises(ConfigError, match="set its name = 'misnamed'"):
            build_model(depth=11, task="misnamed", num_grades=3)
        with pytest.raises(ConfigError, match="cannot be imported"):
            build_model(depth=11, task="missing", num_grades=3)
    finally:
        unregister_head("misnamed")
        unregister_head("missing")
    assert head_entry("regression").probabilities is False and head_entry("regression").needs_grades is False


def test_the_registry_and_config_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises
        "from imgrade.core.registry import backbone_names, task_names\n"
        "import imgrade.config, imgrade.runtime.onnx_engine\n"
        "imgrade.config.RunConfig.from_dict({'model': {'backbone': 'timm:resnet18'}})\n"
        "print(','.join(task_names()))\n"
        "print(','.join(backbone_names()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tasks, backbones = done.stdout.strip().splitlines()
    assert tasks.split(",")[:4] == ["regression", "classification", "coral", "corn"]
    assert backbones.split(",")[:2] == ["reference", "timm"]
