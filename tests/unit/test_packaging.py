"""What `pip install imgrade` brings, and the lowest versions CI installs (scripts/lowest_constraints.py)."""

import importlib.util
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def lowest():
    spec = importlib.util.spec_from_file_location("lowest_constraints", ROOT / "scripts" / "lowest_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_base_install_grades_onnx_files_without_torch_or_the_service():
    names = {requirement.split(">=")[0] for requirement in PROJECT["dependencies"]}
    assert {"numpy", "pillow", "onnxruntime", "pyyaml"} <= names
    assert not names & {"torch", "matplotlib", "scipy", "fastapi", "uvicorn", "onnx", "onnxscript"}


def test_every_dependency_has_a_minimum_and_ci_pins_each_but_torch(lowest, capsys):
    assert lowest.main(["serve", "train", "test"]) == 0
    pins = dict(line.split("==") for line in capsys.readouterr().out.splitlines())
    assert pins["numpy"] and pins["onnxruntime"] and pins["fastapi"] and pins["scipy"] and pins["pytest"]
    assert "torch" not in pins and "ruff" not in pins  # constraints.txt pins those
    assert not [name for name in pins if name.startswith("imgrade")]


def test_a_requirement_without_a_minimum_or_an_unknown_extra_is_refused(lowest):
    with pytest.raises(SystemExit, match="'numpy' in pyproject.toml has no >= minimum"):
        lowest.lowest_pins(["numpy"])
    with pytest.raises(SystemExit, match="unknown extra 'gpu'"):
        lowest.main(["gpu"])


def test_the_license_and_the_typing_marker_ship():
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "END OF TERMS AND CONDITIONS" in text
    assert (ROOT / "src" / "imgrade" / "py.typed").is_file()
