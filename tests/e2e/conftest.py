from pathlib import Path

import pytest

from imgrade.cli import main


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """90 synthetic cucumbers in the CUCUMBER-9 on-disk format (10 per grade on average)."""
    out = tmp_path_factory.mktemp("data") / "synth"
    assert main(["data", "synth", "--out", str(out), "--n", "90", "--seed", "1"]) == 0
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synth_dir) -> Path:
    """A 2-epoch run of the reference network on the synthetic set."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", str(synth_dir), "--epochs", "2", "--out", str(run), "--seed", "0"]) == 0
    return run
