"""How many threads to compute on, and how they wait: a fair share of a CPU that other work shares.

Two choices, both made before the heavy work starts:

- **The wait policy.** torch's OpenMP threads meet at a barrier after every operation. By default
  libgomp spins there for 300,000 loops before it sleeps, so when one of the threads has lost its
  core to another program, the others burn theirs waiting for it: beside one busy thread a
  2-thread training ran 3x slower, two trainings at once 2x slower than one after the other.
  Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) fixes that, but costs a training alone about
  30%: waking a thread for each small operation takes longer than the operation. So the
  command line chooses by what it sees when it starts (:func:`wait_policy`): on idle cores
  ``GOMP_SPINCOUNT=10000``, which covers the gaps between operations and trained as fast as the
  default; beside other work, a passive wait (benchmarks/contention.py). libgomp reads these once,
  when torch loads it, so :func:`settle_wait_policy` runs before torch is imported. A policy
  already in the environment is left as it is.
- **The thread count** (:func:`choose_threads`): the cores this process may use (its CPU affinity,
  a cgroup CPU quota) less those that other programs keep busy, sampled for a moment from
  /proc/stat; never below one. ``--threads`` and ``OMP_NUM_THREADS`` override it. A training
  records the count in its config.yaml and uses it again on ``--resume``: the thread count
  changes the order in which floats are summed, so it is part of what makes a seeded run
  repeatable.

This module never imports torch.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from imgrade.core import siblings

logger = logging.getLogger(__name__)

SPIN_BRIEFLY = {"GOMP_SPINCOUNT": "10000"}
"""The wait policy on idle cores: spin through the short gaps between operations, then sleep."""
SLEEP_AT_ONCE = {"OMP_WAIT_POLICY": "PASSIVE"}
"""The wait policy beside other work: a waiting thread gives its core back at once."""
IDLE_BELOW = 0.25
"""Cores busy with other work below this count as idle (a desktop's background noise)."""
USER_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
"""Either one in the environment means the user chose how threads wait: leave it."""
SAMPLE_S = 0.25
"""How long /proc/stat is watched to see how busy the cores are."""
SAMPLE_REUSE_S = 60.0
"""A sample this recent is used again (a comparison trains many runs in a row)."""
BUSY_ROUNDING = 0.35
"""A core counts as taken by other work when it is at least 1 - this busy (0.65 of a core)."""


def wait_policy(busy: float) -> dict[str, str]:
    """The OpenMP wait policy for cores of which other work keeps ``busy`` busy.

    >>> wait_policy(0.05), wait_policy(0.6)
    ({'GOMP_SPINCOUNT': '10000'}, {'OMP_WAIT_POLICY': 'PASSIVE'})
    """
    return SPIN_BRIEFLY if busy < IDLE_BELOW else SLEEP_AT_ONCE


def settle_wait_policy(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Announce this process, then watch the cores and set the wait policy, where it is still open.

    Nothing happens once torch is loaded (libgomp has read its settings). The process announces
    itself to other imgrade commands (:mod:`imgrade.core.siblings`) so two started together see
    each other; it leaves ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set by the user as they are.
    The sample is the one :func:`auto_threads` uses next. Returns what was set ({} for nothing).
    """
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules:
        return {}
    siblings.announce()
    if any(key in environ for key in USER_WAIT_SETTINGS):
        return {}
    policy = wait_policy(busy_now(affinity_cpus()))
    environ.update(policy)
    logger.debug(f"OpenMP wait policy: {policy}")
    return dict(policy)


def busy_now(cpus: set[int]) -> float:
    """Cores taken by other work: the sampled load, or more where more imgrade commands are computing."""
    return max(sample_busy_cores(cpus), float(siblings.others()))


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads, and why (for the run's log)."""

    threads: int
    reason: str


def choose_threads(usable: float, busy: float) -> int:
    """Threads for ``usable`` cores (a quota may be fractional) of which other work keeps ``busy`` busy.

    A core counts as taken when other work uses most of it (``BUSY_ROUNDING``): a short burst
    elsewhere does not halve a training that would have had the machine to itself.

    A fractional quota rounds down: threads beyond it would only be throttled.

    >>> choose_threads(2, 0.1), choose_threads(2, 0.9), choose_threads(2, 1.95), choose_threads(2.5, 0)
    (2, 1, 1, 2)
    >>> choose_threads(16, 3.2), choose_threads(0.5, 0)
    (13, 1)
    """
    cores = max(1, math.floor(usable + 1e-9))
    taken = math.floor(max(0.0, busy) + BUSY_ROUNDING)
    return max(1, min(cores, cores - taken))


def cpu_quota(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """The CPUs this process's cgroup may use (quota / period), or None where there is no quota.

    Reads cgroup v2 (``cpu.max``: "max 100000" or "150000 100000") and v1
    (``cpu/cpu.cfs_quota_us``, -1 for none, with ``cpu.cfs_period_us``).
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else quota / period
    return None


def affinity_cpus() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def read_cpu_times(stat: str | os.PathLike = "/proc/stat") -> dict[int, tuple[int, int]]:
    """Per CPU, (busy, total) jiffies since boot, from /proc/stat; {} where there is none.

    Idle and I/O wait count as free; guest time is already inside user time.
    """
    times = {}
    try:
        lines = Path(stat).read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            values = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        except ValueError:
            continue
        if len(values) < 5 or not name[3:].isdigit():
            continue
        total = sum(values)
        times[int(name[3:])] = (total - values[3] - values[4], total)
    return times


def busy_cores(
    cpus: set[int], seconds: float = SAMPLE_S, stat: str | os.PathLike = "/proc/stat", sleep=time.sleep
) -> float:
    """How many of ``cpus`` other programs keep busy, watched for ``seconds`` (0.0 where unknown)."""
    before = read_cpu_times(stat)
    sleep(seconds)
    after = read_cpu_times(stat)
    busy = 0.0
    for cpu in cpus:
        if cpu in before and cpu in after:
            used = after[cpu][0] - before[cpu][0]
            total = after[cpu][1] - before[cpu][1]
            if total > 0:
                busy += min(1.0, max(0.0, used / total))
    return busy


_last_sample: tuple[float, float] | None = None  # (monotonic time, busy cores)


def sample_busy_cores(cpus: set[int]) -> float:
    """:func:`busy_cores` of ``cpus``, or the sample taken less than ``SAMPLE_REUSE_S`` ago."""
    global _last_sample
    if _last_sample is None or time.monotonic() - _last_sample[0] >= SAMPLE_REUSE_S:
        _last_sample = (time.monotonic(), busy_cores(cpus))
    return _last_sample[1]


def auto_threads(environ: dict[str, str] | None = None) -> ThreadChoice:
    """The thread count for this process now: ``OMP_NUM_THREADS`` when set, else :func:`choose_threads`."""
    environ = os.environ if environ is None else environ
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return ThreadChoice(int(given), "OMP_NUM_THREADS")
    cpus = affinity_cpus()
    quota = cpu_quota()
    usable = min(len(cpus), quota) if quota is not None else len(cpus)
    busy = busy_now(cpus)
    threads = choose_threads(usable, busy)
    cores = f"{usable:g} usable CPU{'s' if usable != 1 else ''}" + (" (cgroup quota)" if quota is not None else "")
    return ThreadChoice(threads, f"{cores}, {busy:.1f} busy with other work")
