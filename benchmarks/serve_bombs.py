"""`imgrade serve` under decoding bombs: attackers upload them while good clients keep grading.

Run as ``python benchmarks/serve_abuse.py --bombs [MODEL] [--attackers 4] [--seconds 60]``.

The server is a real subprocess, ``python -m imgrade serve MODEL --port FREE`` with its default
limits (10 MB uploads, 64 files, ``--request-timeout-s`` 30 unless given), a token in
$IMGRADE_TOKEN. For ``seconds``, each attacker uploads one bomb per request (bombs.py: every one
under the pixel limit, attacker i starting at the i-th) over a raw socket, one request at a
time, while the good clients grade a 32x32 PNG (as in serve_abuse.py). The server's VmRSS
(/proc/PID/status) is sampled every 100 ms; above ``rss_guard_mb`` the server is killed, so that
the machine lives (and the run fails). Then: is the server up (/healthz and a good request), its
peak RSS (the samples and its VmHWM), the good requests' failures and p50/p99 latency, the
attackers' answers by status code, and how long the server kept computing once they stopped.

The cancellation check, with its own server started with ``--request-timeout-s cancel_timeout_s``
(2 s: a request of 64 64-MP greyscale PNGs cannot finish that soon): one request of as many
greyscale bombs as the limits allow, alone; from its 503, the server's CPU time
(utime + stime in /proc/PID/stat) is sampled every 50 ms, and the check reports when the
server's CPU use fell below 10% of a core (over the next 0.5 s).

Goals (issue 23): the server stays up, peak RSS <= 2 GB, 0 good requests fail, good p99 < 200 ms,
every attacker answered 200, 400, 413 or 503 within the deadline plus slack, no traceback in the
server log, and the CPU stops within 1 s of the 503.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import bombs  # benchmarks/ modules import each other by name
import numpy as np
import serve_abuse as kit
from serve_load import free_port, stop, wait_until_healthy

from imgrade.serve.limits import Limits

ACCEPTED_ANSWERS = frozenset({"200", "400", "413", "503"})
"""A bomb may be graded, refused (400), too large (413) or turned away (503); never a 500 or silence."""
RSS_GOAL_MB = 2000
P99_GOAL_MS = 200
CPU_STOP_GOAL_S = 1.0
IDLE_SHARE = 0.10
"""The server counts as idle below this share of one core..."""
IDLE_WINDOW_S = 0.5
"""...over this long."""
RSS_POLL_S = 0.1
CPU_POLL_S = 0.05
CLOCK_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def run(
    model: str | Path,
    work: Path,
    *,
    seconds: float = 60.0,
    attackers: int = 4,
    good_clients: int = 4,
    request_timeout_s: float = Limits().request_timeout_s,
    cancel_timeout_s: float = 2.0,
    side: int = bombs.FULL_SIDE,
    rss_guard_mb: float = 8000.0,
    wait_s: float = 120.0,
) -> dict[str, Any]:
    """The abuse phase and the cancellation check, each against its own server; the figures."""
    paths = bombs.write_bombs(work / "bombs", side, [name for name, bomb in bombs.BOMBS.items() if not bomb.over_limit])
    uploads = {name: kit._multipart([(path.name.encode(), path.read_bytes())]) for name, path in paths.items()}
    with tempfile.TemporaryDirectory() as scratch:
        target = _target(request_timeout_s)
        server = kit.start_server(
            model, target, Path(scratch) / "abuse.log", "--request-timeout-s", str(request_timeout_s)
        )
        try:
            wait_until_healthy(target.base_url, server)
            figures = abuse(
                target,
                server.pid,
                uploads,
                seconds=seconds,
                attackers=attackers,
                good_clients=good_clients,
                rss_guard_mb=rss_guard_mb,
                wait_s=wait_s,
            )
        finally:
            stop(server)
        log = (Path(scratch) / "abuse.log").read_text(errors="replace")

        target = _target(cancel_timeout_s)
        server = kit.start_server(
            model, target, Path(scratch) / "cancel.log", "--request-timeout-s", str(cancel_timeout_s)
        )
        try:
            wait_until_healthy(target.base_url, server)
            figures["cancel"] = cancel_check(target, server.pid, paths["grey"], wait_s=wait_s)
        finally:
            stop(server)
        log += (Path(scratch) / "cancel.log").read_text(errors="replace")
    figures["server_tracebacks"] = log.count("Traceback")
    figures["request_timeout_s"], figures["cancel_timeout_s"] = request_timeout_s, cancel_timeout_s
    return figures


def _target(request_timeout_s: float) -> kit.Target:
    """Where the next server will listen; its upload limit is the default."""
    return kit.Target(
        "127.0.0.1",
        free_port(),
        secrets.token_urlsafe(24),
        request_timeout_s,
        Limits().max_upload_bytes,
        kit.good_png(),
    )


# ----------------------------------------------------------------------------- the abuse


def abuse(
    target: kit.Target,
    pid: int,
    uploads: dict[str, tuple[bytes, str]],
    *,
    seconds: float,
    attackers: int,
    good_clients: int,
    rss_guard_mb: float,
    wait_s: float,
) -> dict[str, Any]:
    """Attackers and good clients at once for about ``seconds``, the server's RSS sampled throughout."""
    reference = kit.grade_once(target)
    tally = kit.Tally()
    answers: dict[str, Counter] = {name: Counter() for name in uploads}
    slowest = dict.fromkeys(uploads, 0.0)
    deadline = time.monotonic() + seconds
    done, sampled = threading.Event(), threading.Event()
    rss: dict[str, Any] = {"peak_mb": 0.0, "killed": None}
    sampler = threading.Thread(target=_sample_rss, args=(pid, rss_guard_mb, sampled, rss))
    good = [
        threading.Thread(target=kit._good_client, args=(target, reference, done, tally)) for _ in range(good_clients)
    ]
    names = list(uploads)
    orders = [
        names[i % len(names) :] + names[: i % len(names)] for i in range(attackers)
    ]  # attacker i starts at bomb i
    bad = [
        threading.Thread(target=_attacker, args=(target, uploads, order, deadline, answers, slowest, tally.lock))
        for order in orders
    ]
    start = time.perf_counter()
    for thread in [sampler, *good, *bad]:
        thread.start()
    for thread in bad:
        thread.join()
    done.set()
    for thread in good:
        thread.join()
    abuse_s = time.perf_counter() - start
    healthy = rss["killed"] is None and kit.healthy(target, reference)
    busy_s = _seconds_until_idle(pid, wait_s)
    hwm_mb = bombs.status_kb(pid, "VmHWM") / 1024
    sampled.set()
    sampler.join()
    latencies = np.array(tally.good_latencies_ms)
    p50, p99 = np.percentile(latencies, [50, 99]) if len(latencies) else (float("nan"), float("nan"))
    return {
        "seconds": round(abuse_s, 1),
        "attackers": attackers,
        "good_requests": len(latencies) + len(tally.good_failures),
        "good_failures": len(tally.good_failures),
        "good_failure_examples": tally.good_failures[:5],
        "good_p50_ms": round(float(p50), 1),
        "good_p99_ms": round(float(p99), 1),
        "attacker_answers": {name: dict(seen) for name, seen in answers.items()},
        "attacker_slowest_s": {name: round(s, 1) for name, s in slowest.items()},
        "attacker_unexpected": sum(
            n for seen in answers.values() for a, n in seen.items() if a not in ACCEPTED_ANSWERS
        ),
        "server_peak_rss_mb": round(max(rss["peak_mb"], hwm_mb)),
        "server_killed": rss["killed"],
        "healthy_after": int(healthy),
        "busy_after_abuse_s": busy_s,
    }


def _attacker(target, uploads, names, deadline, answers, slowest, lock) -> None:
    """Upload the bombs ``names`` in turn, one request at a time, until ``deadline``."""
    for name in itertools.cycle(names):
        body, content_type = uploads[name]
        start = time.monotonic()
        try:
            answer = kit._send_and_answer(target, kit._head(target, content_type, len(body)) + body)
        except OSError as error:  # could not connect or send the headers: the server is down
            answer = f"client error {type(error).__name__}"
            time.sleep(0.1)  # not a busy loop against a dead port
        with lock:
            answers[name][answer] += 1
            slowest[name] = max(slowest[name], time.monotonic() - start)
        if time.monotonic() >= deadline:
            return


def _sample_rss(pid: int, guard_mb: float, stop_event: threading.Event, rss: dict[str, Any]) -> None:
    """Track the server's peak VmRSS; kill it (through a pidfd: never another process) above ``guard_mb``."""
    pidfd = os.pidfd_open(pid)
    try:
        while not stop_event.wait(RSS_POLL_S):
            rss_mb = bombs.status_kb(pid, "VmRSS") / 1024
            rss["peak_mb"] = max(rss["peak_mb"], rss_mb)
            if rss_mb > guard_mb and rss["killed"] is None:
                rss["killed"] = f"killed by the guard at {rss_mb:,.0f} MB resident (--rss-guard-mb {guard_mb:g})"
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)


# ----------------------------------------------------------------------------- CPU after the answer


def _cpu_s(pid: int) -> float:
    """The process's CPU time so far (user + system, all threads); NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_S  # utime and stime, fields 14 and 15 of stat


def _seconds_until_idle(pid: int, wait_s: float) -> float | None:
    """Seconds from now to the first moment after which the process uses less than IDLE_SHARE of a
    core over IDLE_WINDOW_S; None if there is none within ``wait_s`` (or the process is gone)."""
    start = time.monotonic()
    samples: list[tuple[float, float]] = []  # (seconds since start, CPU seconds)
    first = 0  # the earliest sample that may still open a quiet window
    while (now := time.monotonic() - start) <= wait_s + IDLE_WINDOW_S:
        cpu = _cpu_s(pid)
        if cpu != cpu:  # NaN: the process is gone
            return None
        samples.append((now, cpu))
        while now - samples[first][0] >= IDLE_WINDOW_S:  # this sample closes the window opened at `first`
            if cpu - samples[first][1] < IDLE_SHARE * IDLE_WINDOW_S:
                return round(samples[first][0], 2)
            first += 1
        time.sleep(CPU_POLL_S)
    return None


def cancel_check(target: kit.Target, pid: int, grey: Path, *, wait_s: float) -> dict[str, Any]:
    """One request of as many greyscale bombs as the limits allow, alone: its answer, and how many
    seconds after that answer the server stopped using the CPU."""
    data = grey.read_bytes()
    part = len(kit._multipart([(grey.name.encode(), data)])[0])
    files = min(Limits().max_files, (target.max_upload_bytes - 1000) // part)  # 1000: the last boundary and slack
    body, content_type = kit._multipart([(f"{i}-{grey.name}".encode(), data) for i in range(files)])
    start = time.monotonic()
    answer = kit._send_and_answer(target, kit._head(target, content_type, len(body)) + body)
    answered_s = time.monotonic() - start
    stops_s = _seconds_until_idle(pid, wait_s) if answer == "503" else None
    return {
        "files": files,
        "upload_mb": round(len(body) / 1e6, 1),
        "answer": answer,
        "answer_s": round(answered_s, 1),
        "cpu_stops_s": stops_s,
        "wait_s": wait_s,
    }


# ----------------------------------------------------------------------------- the report


def goals(figures: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each goal: what it asks, what was measured, whether it was met."""
    cancel = figures["cancel"]
    if cancel["answer"] != "503":
        stop_text, stop_met = f"no 503 to measure from: answered {cancel['answer']} after {cancel['answer_s']} s", False
    elif cancel["cpu_stops_s"] is None:
        stop_text, stop_met = f"still busy {cancel['wait_s']:g} s after the 503", False
    else:
        stop_text, stop_met = (
            f"{cancel['cpu_stops_s']:.2f} s after the 503 (at {cancel['answer_s']} s)",
            cancel["cpu_stops_s"] <= CPU_STOP_GOAL_S,
        )
    unexpected = {
        name: {a: n for a, n in seen.items() if a not in ACCEPTED_ANSWERS}
        for name, seen in figures["attacker_answers"].items()
    }
    unexpected = {name: seen for name, seen in unexpected.items() if seen}
    return [
        (
            "server up at the end (/healthz and a good request)",
            "up"
            if figures["healthy_after"]
            else f"DOWN{': ' + figures['server_killed'] if figures['server_killed'] else ''}",
            bool(figures["healthy_after"]),
        ),
        (
            f"server peak RSS <= {RSS_GOAL_MB} MB",
            f"{figures['server_peak_rss_mb']:,} MB",
            figures["server_peak_rss_mb"] <= RSS_GOAL_MB,
        ),
        (
            "0 good requests fail",
            f"{figures['good_failures']} of {figures['good_requests']:,} failed",
            figures["good_failures"] == 0 and figures["good_requests"] > 0,
        ),
        (
            f"good p99 < {P99_GOAL_MS} ms",
            f"p99 {figures['good_p99_ms']:.1f} ms (p50 {figures['good_p50_ms']:.1f} ms)",
            figures["good_p99_ms"] < P99_GOAL_MS,
        ),
        (
            "attackers answered 200/400/413/503 in time",
            f"{figures['attacker_unexpected']} other answers{': ' + str(unexpected) if unexpected else ''}",
            figures["attacker_unexpected"] == 0,
        ),
        (
            "no traceback in the server log",
            f"{figures['server_tracebacks']} tracebacks",
            figures["server_tracebacks"] == 0,
        ),
        (f"CPU stops within {CPU_STOP_GOAL_S:g} s of a 503", stop_text, stop_met),
    ]


def report(figures: dict[str, Any]) -> str:
    """The attackers' answers, the figures and each goal with PASS or FAIL."""
    lines = [f"{'bomb':<14}{'sent':>6}  {'answers':<34}{'slowest':>8}"]
    for name, seen in figures["attacker_answers"].items():
        text = ", ".join(f"{a} x{n}" for a, n in sorted(seen.items()))
        lines.append(f"{name:<14}{sum(seen.values()):>6}  {text:<34}{figures['attacker_slowest_s'][name]:>7.1f}s")
    busy = figures["busy_after_abuse_s"]
    cancel = figures["cancel"]
    lines += [
        f"{figures['attackers']} attackers for {figures['seconds']:g} s (server --request-timeout-s {figures['request_timeout_s']:g}); "
        f"good requests: {figures['good_requests']:,} sent, {figures['good_failures']} failed, "
        f"p50 {figures['good_p50_ms']:.1f} ms, p99 {figures['good_p99_ms']:.1f} ms",
        f"server peak RSS {figures['server_peak_rss_mb']:,} MB; busy for "
        + (f"{busy:.1f} s" if busy is not None else "more than the wait")
        + " after the last attacker's answer",
        f"cancellation check (server --request-timeout-s {figures['cancel_timeout_s']:g}): {cancel['files']} greyscale bombs "
        f"in one {cancel['upload_mb']} MB request, answered {cancel['answer']} after {cancel['answer_s']} s",
    ]
    lines += [f"{'PASS' if met else 'FAIL'}  {goal}: {measured}" for goal, measured, met in goals(figures)]
    return "\n".join(lines)
