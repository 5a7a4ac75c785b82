"""What every fuzz test shares: hypothesis's settings, the per-input time limit and its volume knobs.

``IMGRADE_FUZZ_EXAMPLES=20000`` runs every fuzz test with that many inputs (``benchmarks/reliability.py``
does); ``IMGRADE_FUZZ_SECONDS`` is the time one input may take (10 s: a guard against hangs, not a
speed goal). tests/fuzz/conftest.py puts this folder on the path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from datetime import timedelta

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("IMGRADE_FUZZ_EXAMPLES", "0"))
"""Inputs per test when set (a volume run); else each test's own default."""
SECONDS_PER_INPUT = float(os.environ.get("IMGRADE_FUZZ_SECONDS", "10"))


def fuzz(examples: int):
    """Hypothesis settings for a fuzz test: ``examples`` inputs (IMGRADE_FUZZ_EXAMPLES overrides)."""
    return settings(
        max_examples=EXAMPLES or examples,
        deadline=timedelta(seconds=SECONDS_PER_INPUT),
        database=None,  # nothing written into the repository; a failure prints its input
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


class Hang(BaseException):
    """An input ran past SECONDS_PER_INPUT (BaseException: a reader's ``except Exception`` must not swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Hang in the block after ``seconds`` (where SIGALRM exists, in the main thread)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Hang(f"no result after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
