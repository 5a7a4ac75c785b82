"""train --resume: flags equal to the run's saved config are accepted, each differing one is named."""

import pytest

from imgrade.cli import main
from imgrade.cli.commands import check_resume_flags
from imgrade.config import RunConfig, dump_config
from imgrade.core.errors import ConfigError


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A run folder holding only the config.yaml that train writes (paths resolved)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    saved = RunConfig().with_overrides(
        {
            "data.path": str((tmp_path / "photos").resolve()),
            "data.grades": ["2L", "L", "M"],
            "train.epochs": 30,
            "train.lr": 0.01,
            "model.depth": 11,
        }
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(dump_config(saved))
    return tmp_path / "run"


def test_flags_equal_to_the_saved_config_are_accepted(run):
    # a relative path, a comma-separated list, an int where the config has a float
    check_resume_flags(
        run,
        {
            "data.path": "photos",
            "data.grades": "2L,L,M",
            "train.epochs": 30,
            "train.lr": 0.01,
            "model.depth": 11,
            "train.seed": 0,
            "train.augment": True,
        },
    )


def test_a_differing_flag_is_named_with_both_values(run):
    with pytest.raises(ConfigError) as error:
        check_resume_flags(run, {"data.path": "photos", "train.epochs": 40})
    assert (
        str(error.value)
        == "--epochs 40 differs from the run's 30: drop it to continue, or train a new run in another --out"
    )
    with pytest.raises(
        ConfigError,
        match=r"^--grades M,L,2L differs from the run's 2L,L,M; --lr 0.1 differs from the run's 0.01: drop them",
    ):
        check_resume_flags(run, {"data.grades": "M,L,2L", "train.lr": 0.1})
    with pytest.raises(ConfigError, match=r"^--no-augment differs from the run's augment on: drop it"):
        check_resume_flags(run, {"train.augment": False})
    with pytest.raises(ConfigError, match=r"^--data .*elsewhere differs from the run's .*photos"):
        check_resume_flags(run, {"data.path": "elsewhere"})


def test_config_and_preset_must_give_the_saved_config(run, tmp_path):
    same = tmp_path / "same.yaml"
    same.write_text("data:\n  grades: [2L, L, M]\nmodel:\n  depth: 11\ntrain:\n  epochs: 30\n  lr: 0.01\n")
    check_resume_flags(run, {"data.path": "photos"}, config=str(same))  # its data.path is unset: the run's stands
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  depth: 11\ntrain:\n  epochs: 30\n  lr: 0.01\n  seed: 3\n")
    with pytest.raises(ConfigError, match=r"^--config .*other.yaml sets train.seed 3, the run's is 0: drop it"):
        check_resume_flags(run, {"data.grades": "2L,L,M"}, config=str(other))
    with pytest.raises(ConfigError, match=r"--preset accurate sets model.task sord, the run's is regression"):
        check_resume_flags(run, {}, config=str(same), preset="accurate")


def test_a_folder_without_a_config_is_left_to_the_pipeline(tmp_path):
    check_resume_flags(tmp_path, {"train.epochs": 40})


def test_the_cli_refuses_in_one_line_before_touching_the_run(run, capsys):
    before = (run / "config.yaml").read_text()
    assert main(["train", "--resume", "--data", "photos", "--epochs", "40", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "imgrade: error: --epochs 40 differs from the run's 30: drop it to continue, or train a new run in another --out"
    )
    assert (run / "config.yaml").read_text() == before and sorted(p.name for p in run.iterdir()) == ["config.yaml"]
