"""Reliability: nothing lost, nothing let in. Fuzzed readers, killed training runs, abused service.

Usage:
    python benchmarks/reliability.py [--examples 5000] [--seconds-per-input 10] [--kill-rounds 2]
                                     [--abuse-seconds 60] [--only NAME]

Sections ``kills`` (SIGKILLs of `imgrade train`, resumed; results identical to an uninterrupted
run?), ``http`` (bad requests against a real server while good clients grade: any good one
failed?) and ``special`` (FIFOs, device links and sockets named like photos in every reader: one
line each within a second?) follow the fuzzing.

One section per reader (cucumber9, unpickler, images, csv) runs the property tests of
tests/fuzz/test_readers_fuzz.py with about ``--examples`` inputs in all: truncated, bit-flipped
and random files made from valid seeds, and pickles that call arbitrary globals. Section
``config`` runs tests/fuzz/test_config_fuzz.py: random, damaged, deep and aliased YAML configs. It reports the
inputs tried, the imgrade errors (clean refusals: one line, naming the file), the accepted
inputs, the unexpected outcomes (another exception, a hang past ``--seconds-per-input``, code
that ran, a message on several lines) and the slowest input. Exits 1 if anything was unexpected.
Needs the test tools (``pip install -e ".[test]"``: hypothesis).

Adding a section: write ``def name(args) -> dict[str, float]`` whose dict has an
``unexpected`` count (0 when all went well) and append ``("name", name)`` to ``SECTIONS``;
``--only name`` then runs it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

FUZZ_TESTS = Path(__file__).resolve().parents[1] / "tests" / "fuzz" / "test_readers_fuzz.py"
CONFIG_FUZZ_TESTS = FUZZ_TESTS.with_name("test_config_fuzz.py")


def _fuzz_module(examples_per_test: int, seconds_per_input: float, path: Path = FUZZ_TESTS):
    """A fresh import of the fuzz tests, their settings read from the environment at import."""
    os.environ["IMGRADE_FUZZ_EXAMPLES"] = str(examples_per_test)
    os.environ["IMGRADE_FUZZ_SECONDS"] = str(seconds_per_input)
    return _load_by_path(path, f"imgrade_fuzz_{path.stem}")


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 in the block: libtiff prints a line for every damaged TIFF."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def fuzz_reader(reader: str, path: Path = FUZZ_TESTS) -> Callable[[argparse.Namespace], dict[str, float]]:
    """A section that runs ``reader``'s fuzz tests in ``path``, ``args.examples`` inputs shared between them."""

    def section(args: argparse.Namespace) -> dict[str, float]:
        # imported twice: the examples per test are read at import, and they depend on how many tests there are
        num_tests = len(_fuzz_module(1, args.seconds_per_input, path).FUZZ_TESTS[reader])
        module = _fuzz_module(max(1, args.examples // num_tests), args.seconds_per_input, path)
        tally = module.TALLY[reader]
        unraisable = []  # errors raised while freeing an object (numpy's, say): pytest fails on them too
        previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
        try:
            for test in module.FUZZ_TESTS[reader]:
                try:
                    with _quiet_stderr():
                        test()
                except Exception:  # hypothesis has shrunk it to the smallest failing input: show it
                    traceback.print_exc(file=sys.stdout)
                    tally["unexpected"] = max(1, tally["unexpected"])
            gc.collect()
        finally:
            sys.unraisablehook = previous_hook
        for info in unraisable[:3]:
            print(f"while freeing {info.object!r:.80}: {info.exc_type.__name__}: {info.exc_value}")
        tally["unexpected"] += len(unraisable)
        return dict(tally)

    return section


def _load_by_path(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kills(args: argparse.Namespace) -> dict[str, float]:
    """SIGKILL `imgrade train` at random moments (one during a checkpoint write), resume each time;
    ``--kill-rounds`` rounds of 6 kills, each compared with an uninterrupted run."""
    crash = _load_by_path(FUZZ_TESTS.parents[1] / "e2e" / "test_crash_safety.py", "crash_safety")
    totals = {"kills": 0, "during_write": 0, "rounds_identical": 0, "rounds": args.kill_rounds, "unexpected": 0}
    with tempfile.TemporaryDirectory(prefix="imgrade-kills-") as scratch:
        from imgrade.cli import main as imgrade

        data = Path(scratch) / "synth"
        with _quiet_stderr():
            imgrade(["data", "synth", "--out", str(data), "--n", "90", "--seed", "1"])
        for round_ in range(args.kill_rounds):
            result = crash.kill_and_resume(data, Path(scratch) / f"round{round_}", seed=round_)
            totals["kills"] += result["kills"]
            totals["during_write"] += result["during_write"]
            totals["rounds_identical"] += result["identical"]
            totals["unexpected"] += 1 - result["identical"]
    return totals


def bad_requests(args: argparse.Namespace) -> dict[str, float]:
    """Every kind of bad HTTP request and an idle-connection flood against a real `imgrade serve`,
    while good clients grade photos (benchmarks/serve_abuse.py)."""
    abuse = _load_by_path(Path(__file__).with_name("serve_abuse.py"), "serve_abuse")
    figures = abuse.run(seconds=args.abuse_seconds)
    print(abuse.report(figures), flush=True)
    problems = abuse.failed(figures)
    return {
        "bad_requests": figures["bad_requests"],
        "good_requests": figures["good_requests"],
        "good_failures": figures["good_failures"],
        "unexpected": len(problems),
    }


def special_files(args: argparse.Namespace) -> dict[str, float]:
    """A FIFO, links to /dev/zero and /dev/null and a socket named like photos, in every reader: the
    milliseconds to each one-line error (benchmarks/special_files.py)."""
    special = _load_by_path(Path(__file__).with_name("special_files.py"), "special_files")
    return special.run(repeats=20)


SECTIONS: list[tuple[str, Callable[[argparse.Namespace], dict[str, float]]]] = [
    ("cucumber9", fuzz_reader("cucumber9")),
    ("unpickler", fuzz_reader("unpickler")),
    ("images", fuzz_reader("images")),
    ("csv", fuzz_reader("csv")),
    ("config", fuzz_reader("config", CONFIG_FUZZ_TESTS)),
    ("kills", kills),
    ("http", bad_requests),
    ("special", special_files),
]
FUZZ_SECTIONS = ("cucumber9", "unpickler", "images", "csv", "config")


def _format(result: dict[str, float]) -> str:
    return "  ".join(
        f"{key} {value:,.3f}" if isinstance(value, float) else f"{key} {value:,}" for key, value in result.items()
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="fuzzed inputs per reader (default 5000)")
    parser.add_argument("--seconds-per-input", type=float, default=10.0, help="an input taking longer counts as a hang")
    parser.add_argument("--kill-rounds", type=int, default=2, help="rounds of 6 SIGKILLs of imgrade train (default 2)")
    parser.add_argument(
        "--abuse-seconds", type=float, default=60.0, help="how long bad and good clients hit the server (default 60)"
    )
    parser.add_argument("--only", choices=[name for name, _ in SECTIONS], help="run one section")
    args = parser.parse_args()

    # Pillow warns about the damaged files it still opens; hypothesis keeps its caches out of the repository.
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
    from hypothesis.configuration import set_hypothesis_home_dir

    home = tempfile.TemporaryDirectory(prefix="imgrade-reliability-")
    set_hypothesis_home_dir(home.name)

    results: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    for name, section in SECTIONS:
        if args.only and name != args.only:
            continue
        t0 = time.perf_counter()
        results[name] = section(args)
        print(f"{name:10s} {_format(results[name])}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    fuzzed = [results[name] for name in FUZZ_SECTIONS if name in results]
    if fuzzed:
        inputs = sum(int(r["inputs"]) for r in fuzzed)
        unexpected = sum(int(r["unexpected"]) for r in fuzzed)
        print(
            f"{inputs:,} inputs fuzzed with {unexpected or 'zero'} unexpected errors "
            f"(slowest input {max(r['slowest_s'] for r in fuzzed):.2f} s; {time.perf_counter() - start:.0f} s in all)"
        )
    failed = [name for name, result in results.items() if result.get("unexpected", 0)]
    if failed:
        print(f"unexpected outcomes in: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
