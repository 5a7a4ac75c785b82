"""The thread count, the OpenMP wait policy and the precision a run chooses, on faked CPUs and quotas."""

import os
import subprocess
import sys
import time
import types

import pytest
import torch

from imgrade.config import RunConfig
from imgrade.core import cpu as cpu_info
from imgrade.core import perf, threads
from imgrade.core.siblings import FOLDER, announce
from imgrade.core.siblings import others as count_others  # the real one: conftest patches it for the suite
from imgrade.core.threads import sample_busy_cores  # the real one, too
from imgrade.pipeline.trainer import speed_settings

CPUINFO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
CPUINFO_AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"
CPUINFO_PLAIN = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16\n"  # no x86 flags line


@pytest.mark.parametrize(
    ("usable", "busy", "expected"),
    [
        (2, 0.0, 2),  # idle: every core
        (2, 0.5, 2),  # a burst elsewhere: still every core
        (2, 0.7, 1),  # one core mostly taken
        (2, 1.0, 1),  # one busy thread beside us
        (2, 2.0, 1),  # all taken: never below one
        (8, 3.0, 5),
        (4, 0.0, 4),
        (1.5, 0.0, 1),  # a quota of 1.5 CPUs: the half would only be throttled
        (0.3, 0.0, 1),
    ],
)
def test_threads_are_the_usable_cores_less_those_other_work_takes(usable, busy, expected):
    assert threads.choose_threads(usable, busy) == expected


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert threads.cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.cpu_quota(v2) is None

    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cpu_quota(v1) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cpu_quota(v1) is None
    assert threads.cpu_quota(tmp_path / "absent") is None


def _stat(*cpus):
    """/proc/stat text with (busy, idle) jiffies per CPU (busy as user time)."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (busy, idle) in enumerate(cpus)]
    return "\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n"


def test_busy_cores_are_read_from_two_samples_of_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(_stat((1000, 5000), (2000, 9000), (0, 100)))
    # over the sample CPU 0 was busy 100 of 100 jiffies, CPU 1 25 of 100, CPU 2 not ours to count
    second = _stat((1100, 5000), (2025, 9075), (100, 100))
    busy = threads.busy_cores({0, 1}, seconds=0.25, stat=stat, sleep=lambda s: stat.write_text(second))
    assert busy == pytest.approx(1.25)
    assert threads.busy_cores({0, 1}, stat=tmp_path / "absent", sleep=lambda s: None) == 0.0


def test_auto_threads_reads_affinity_quota_and_load(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    monkeypatch.setattr(threads, "sample_busy_cores", lambda cpus: 1.0 if cpus == {0, 1, 2, 3} else 99.0)
    choice = threads.auto_threads({})
    assert choice.threads == 3 and "4 usable CPUs" in choice.reason and "1.0 busy" in choice.reason

    monkeypatch.setattr(threads, "cpu_quota", lambda: 2.0)  # a container allowed two of the four
    choice = threads.auto_threads({})
    assert choice.threads == 1 and "2 usable CPUs (cgroup quota)" in choice.reason


def test_omp_num_threads_in_the_environment_overrides_the_choice(monkeypatch):
    monkeypatch.setattr(threads, "sample_busy_cores", lambda cpus: pytest.fail("no sample when the user chose"))
    assert threads.auto_threads({"OMP_NUM_THREADS": "3"}) == threads.ThreadChoice(3, "OMP_NUM_THREADS")


def test_a_recent_sample_is_used_again(monkeypatch):
    monkeypatch.setattr(threads, "_last_sample", None)
    samples = iter([0.2, 1.9])
    monkeypatch.setattr(threads, "busy_cores", lambda cpus: next(samples))
    clock = iter([100.0, 130.0, 200.0, 200.0])  # taken; checked (reused); checked, taken again
    monkeypatch.setattr(threads, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    assert sample_busy_cores({0, 1}) == 0.2
    assert sample_busy_cores({0, 1}) == 0.2  # 30 s later: the same sample
    assert sample_busy_cores({0, 1}) == 1.9  # 100 s later: a new one


def test_the_wait_policy_spins_briefly_on_idle_cores_and_sleeps_beside_other_work():
    assert threads.wait_policy(0.0) == {"GOMP_SPINCOUNT": "10000"}
    assert threads.wait_policy(0.2) == {"GOMP_SPINCOUNT": "10000"}  # background noise
    assert threads.wait_policy(0.4) == threads.wait_policy(1.0) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_wait_policy_is_set_only_where_the_user_chose_none_and_torch_is_not_loaded(monkeypatch):
    monkeypatch.setattr(threads, "sample_busy_cores", lambda cpus: 1.0)
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}):
        env = dict(chosen)
        assert threads.settle_wait_policy(env) == {} and env == chosen
    env = {"PATH": "/bin"}
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh process, before torch is imported
    assert threads.settle_wait_policy(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}


def test_with_torch_loaded_the_wait_policy_is_left_alone(monkeypatch):
    monkeypatch.setattr(threads, "sample_busy_cores", lambda cpus: pytest.fail("no sample: too late to matter"))
    env = {}
    assert "torch" in sys.modules and threads.settle_wait_policy(env) == {} and env == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch's OpenMP is libgomp on Linux")
@pytest.mark.parametrize("given", [{}, {"GOMP_SPINCOUNT": "300000"}])
def test_libgomp_in_an_imgrade_training_waits_as_chosen_or_as_told(given, synth_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in threads.USER_WAIT_SETTINGS}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"  # libgomp prints the settings it read when torch loads it
    argv = ["train", "--data", str(synth_dir), "--epochs", "1", "--depth", "11", "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "imgrade", *argv], env={**env, **given}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    spins = {line.split("=")[1].strip(" '") for line in done.stderr.splitlines() if "GOMP_SPINCOUNT =" in line}
    # libgomp's own default is 300000, a passive wait shows as 0; which of imgrade's two policies
    # applies depends on what else this machine is doing now
    assert spins in ([{"300000"}] if given else [{"10000"}, {"0"}]), done.stderr[-2000:]


# ------------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(CPUINFO_BF16, True), (CPUINFO_AMX, True), (CPUINFO_PLAIN, False), (ARM, False), ("", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo, native):
    assert perf.cpu_has_bf16(cpuinfo) is native


@pytest.mark.parametrize(("cpuinfo", "auto"), [(CPUINFO_BF16, "bf16"), (CPUINFO_PLAIN, "off")])
def test_amp_auto_follows_the_cpu_and_off_or_bf16_are_kept(monkeypatch, tmp_path, cpuinfo, auto):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(cpu_info, "CPUINFO", tmp_path / "cpuinfo")
    cpu = torch.device("cpu")
    assert perf.resolve_amp("auto", cpu) == auto
    assert perf.autocast_dtype("auto", cpu) is (torch.bfloat16 if auto == "bf16" else None)
    assert perf.resolve_amp("off", cpu) == "off" and perf.autocast_dtype("off", cpu) is None
    assert perf.resolve_amp("bf16", cpu) == "bf16" and perf.autocast_dtype("bf16", cpu) is torch.bfloat16
    assert perf.resolve_amp("auto", cpu, resuming=True) == "off"  # a run from before runs recorded it


def test_amp_auto_on_a_gpu_follows_its_bf16_support(monkeypatch):
    cuda = torch.device("cuda")
    for supported, expected in ((True, "bf16"), (False, "off")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert perf.resolve_amp("auto", cuda) == expected


# ------------------------------------------------------------------------------- what a run records


@pytest.fixture
def fake_machine(monkeypatch):
    """A 4-core machine with native bf16 and one core busy elsewhere."""
    monkeypatch.setattr(threads, "affinity_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    monkeypatch.setattr(threads, "sample_busy_cores", lambda cpus: 1.0)
    monkeypatch.setattr(perf, "cpu_has_bf16", lambda cpuinfo=None: True)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_a_fresh_run_records_the_choices(fake_machine):
    cfg = speed_settings(RunConfig.from_dict({"train": {"device": "cpu"}}))
    assert (cfg.train.threads, cfg.train.amp) == (3, "bf16")


def test_flags_override_the_choices(fake_machine):
    cfg = speed_settings(RunConfig.from_dict({"train": {"device": "cpu", "threads": 2, "amp": "off"}}))
    assert (cfg.train.threads, cfg.train.amp) == (2, "off")


def test_a_resumed_run_from_before_the_choices_keeps_what_it_had(fake_machine):
    cfg = speed_settings(RunConfig.from_dict({"train": {"device": "cpu"}}), resuming=True)
    assert (cfg.train.threads, cfg.train.amp) == (0, "off")  # torch's default threads, fp32


def test_other_computing_imgrade_commands_are_counted_while_they_live(tmp_path):
    folder = tmp_path / "computing"
    script = f"from pathlib import Path; from imgrade.core.siblings import announce; announce(Path({str(folder)!r})); input()"
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, text=True)
    try:
        for _ in range(200):  # until it has announced itself
            if folder.is_dir() and any(folder.iterdir()):
                break
            time.sleep(0.05)
        assert count_others(folder) == 1
        announce(folder)  # this process's own file is not counted
        assert count_others(folder) == 1
    finally:
        child.communicate("\n", timeout=30)
    assert count_others(folder) == 0 and not (folder / str(child.pid)).exists()  # gone at its exit

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / dead.stdout.strip()).touch()  # as a process killed with SIGKILL leaves it
    assert count_others(folder) == 0 and not (folder / dead.stdout.strip()).exists()
    assert FOLDER.name.startswith("imgrade-")
