"""A run chooses its threads and precision, records them, says so, and --resume computes as it began."""

import logging

import pytest
import torch
import yaml

from imgrade.cli import main
from imgrade.core import perf, threads
from imgrade.runtime.run_checkpoint import Checkpoint


@pytest.fixture
def machine(monkeypatch):
    """A faked 4-core CPU with native bf16; ``machine.busy`` sets the cores other work takes."""

    class Machine:
        busy = 1.0

    monkeypatch.setattr(threads, "affinity_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    monkeypatch.setattr(threads, "sample_busy_cores", lambda cpus: Machine.busy)
    monkeypatch.setattr(perf, "cpu_has_bf16", lambda cpuinfo=None: True)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield Machine
    torch.set_num_threads(before)


def _recorded(run):
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    return train["threads"], train["amp"]


def test_a_run_records_its_choices_logs_them_and_resume_reuses_them(
    machine, synth_dir, tmp_path, monkeypatch, caplog, interrupted_training
):
    args = ["train", "-v", "--data", str(synth_dir), "--epochs", "2", "--depth", "11", "--device", "cpu"]
    with caplog.at_level(logging.DEBUG, logger="imgrade"), interrupted_training():
        assert main([*args, "--out", str(tmp_path / "run")]) == 130
    assert _recorded(tmp_path / "run") == (3, "bf16")
    assert torch.get_num_threads() == 3
    log = caplog.text
    assert "threads: 3 (4 usable CPUs, 1.0 busy with other work" in log
    assert "on cpu, 3 threads, bf16 autocast" in log

    # the machine is idle now and would get 4 threads: the run goes on with the 3 it began with
    machine.busy = 0.0
    torch.set_num_threads(1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imgrade"):
        assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 0
    assert torch.get_num_threads() == 3 and "on cpu, 3 threads, bf16 autocast" in caplog.text
    assert Checkpoint.load(tmp_path / "run" / "last.pt").epoch == 2


def test_threads_and_amp_off_override_the_choices(machine, synth_dir, tmp_path, caplog):
    args = ["train", "-v", "--data", str(synth_dir), "--epochs", "1", "--depth", "11", "--device", "cpu"]
    with caplog.at_level(logging.DEBUG, logger="imgrade"):
        assert main([*args, "--threads", "2", "--amp", "off", "--out", str(tmp_path / "run")]) == 0
    assert _recorded(tmp_path / "run") == (2, "off")
    assert "on cpu, 2 threads, fp32" in caplog.text and "threads: " not in caplog.text  # nothing was chosen


def test_omp_num_threads_overrides_the_choice(machine, synth_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["train", "--data", str(synth_dir), "--epochs", "1", "--depth", "11", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert _recorded(tmp_path / "run") == (1, "bf16")
