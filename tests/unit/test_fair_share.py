"""The thread count, the OpenMP wait policy and the precision a run chooses, on faked CPUs and quotas."""

import os
import subprocess
import sys
import types

import pytest
import torch

from imgrade.config import RunConfig
from imgrade.core import perf, threads
from imgrade.core.threads import sample_busy_cores  # the real one: conftest patches it for the suite
from imgrade.pipeline.train import speed_settings

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


def test_the_wait_policy_is_set_only_where_the_user_chose_none():
    env = {"PATH": "/bin"}
    if "torch" in sys.modules:  # this test process loaded torch long ago: nothing to set any more
        assert threads.set_wait_policy(env) is False and env == {"PATH": "/bin"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}):
        assert threads.set_wait_policy(dict(chosen)) is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch's OpenMP is libgomp on Linux")
@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_libgomp_in_an_imgrade_process_waits_passively_unless_told_otherwise(given, expected):
    env = {k: v for k, v in os.environ.items() if k not in threads.USER_WAIT_SETTINGS}
    env["OMP_DISPLAY_ENV"] = "TRUE"  # libgomp prints the settings it read when torch loads it
    if given:
        env["OMP_WAIT_POLICY"] = given
    done = subprocess.run(
        [sys.executable, "-c", "import imgrade, torch; torch.ones(4).sum()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"OMP_WAIT_POLICY = '{expected}'" in done.stderr, done.stderr[-2000:]


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
    monkeypatch.setattr(perf, "CPUINFO", tmp_path / "cpuinfo")
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
