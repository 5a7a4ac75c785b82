"""Special files named like photos: a FIFO, links to /dev/zero and /dev/null, a Unix socket.

Usage:
    python benchmarks/special_files.py [--repeats 20]

Puts each kind where a reader meets it: a photo given by path (as predict, the Python API and
Ray's actors read it), its header (``data info``), class folders and a CSV row (as train and
evaluate read them), a CSV manifest, a CUCUMBER-9 batch file and a Ray list that are themselves
special, and ``imgrade train`` and ``imgrade predict`` run in this process. Times each call from
its start to its one-line error (predict: its error row), setting up not counted, and prints the
median and slowest milliseconds per reader and kind, after one warm-up call each. A call that
ends in anything but one line naming the file and its kind, takes over ``LIMIT_S``, hangs
(``HANG_S``) or maps more than ``MEMORY`` (a read of /dev/zero) is unexpected (exit status 1).
``benchmarks/reliability.py --only special`` runs it too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = {
    "fifo": "a FIFO (named pipe)",
    "zero": "a link to a character device",
    "null": "a link to a character device",
    "socket": "a socket",
}
LIMIT_S = 1.0
"""The promise: each refusal within a second (they take well under a millisecond but the CLI's)."""
HANG_S = 10.0
MEMORY = 2 << 30


def make_special(path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind in ("zero", "null"):
        path.symlink_to(f"/dev/{kind}")
    else:
        with contextlib.chdir(path.parent), socket.socket(socket.AF_UNIX) as unix:
            unix.bind(path.name)
    return path


@contextlib.contextmanager
def guarded():
    """SIGALRM after HANG_S; the address space capped MEMORY above what is mapped now (Linux)."""

    def stop(signum, frame):
        raise TimeoutError(f"no answer after {HANG_S:g} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    limits = resource.getrlimit(resource.RLIMIT_AS)
    with contextlib.suppress(OSError):
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (mapped + MEMORY, limits[1]))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, limits)


Case = Callable[[str], tuple[str, Callable[[], str]]]
"""Sets up a special file of a kind where a reader meets it; returns (the name the error must give,
the timed call, which returns what the reader said)."""


def cases(scratch: Path, run: Path) -> dict[str, Case]:
    """Every reader's case, by the name the table prints."""
    from imgrade.batch import read_paths
    from imgrade.cli import main
    from imgrade.data.csv_manifest import read_csv_manifest
    from imgrade.data.cucumber9 import read_cucumber9
    from imgrade.data.cucumber9_writer import write_cucumber9
    from imgrade.data.folders import read_class_folders
    from imgrade.data.images import load_image, stored_size

    def folders(kind: str) -> tuple[Path, Path]:
        """Class folders L/ and M/ of one photo each, and L/x.png of ``kind``."""
        root = Path(tempfile.mkdtemp(dir=scratch))
        for grade in ("L", "M"):
            (root / grade).mkdir()
            Image.new("RGB", (32, 32), (0, 200, 0)).save(root / grade / "a.png")
        return root, make_special(root / "L" / "x.png", kind)

    def message(call, *args) -> Callable[[], str]:
        def said() -> str:
            try:
                call(*args)
            except ValueError as error:  # every imgrade error is a ValueError
                return str(error)
            return "no error"

        return said

    def photo(read):
        def case(kind):
            path = folders(kind)[1]
            return str(path), message(read, path)

        return case

    def itself(read, name):
        def case(kind):
            path = make_special(Path(tempfile.mkdtemp(dir=scratch)) / name, kind)
            return str(path), message(read, path)

        return case

    def class_folders(kind):
        root, path = folders(kind)
        return str(path), message(read_class_folders, root, 32)

    def csv_row(kind):
        root, _ = folders(kind)
        (root / "set.csv").write_text("path,target\nM/a.png,0\nL/x.png,1\n")
        return "row 3: image L/x.png", message(read_csv_manifest, root / "set.csv", 32)

    def cucumber9_batch(kind):
        images, labels = np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1])
        folder = write_cucumber9(Path(tempfile.mkdtemp(dir=scratch)) / "c", images, labels, GRADES9, num_batches=1)
        (folder / "data_batch_1").unlink()
        make_special(folder / "data_batch_1", kind)
        return str(folder / "data_batch_1"), message(read_cucumber9, folder)

    def cli(*argv):
        def case(kind):
            root, path = folders(kind)

            def said() -> str:
                out = io.StringIO()
                with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
                    main([str(root) if arg == "DATA" else arg for arg in argv])
                return "\n".join(line for line in out.getvalue().splitlines() if str(path) in line) or "no error"

            return str(path), said

        return case

    return {
        "photo (predict, API, Ray actor)": photo(lambda path: load_image(path, 32)),
        "photo header (data info)": photo(stored_size),
        "class folders (train, evaluate)": class_folders,
        "CSV manifest row": csv_row,
        "CSV manifest itself": itself(lambda path: read_csv_manifest(path, 32), "set.csv"),
        "CUCUMBER-9 batch file": cucumber9_batch,
        "Ray list (.txt) itself": itself(read_paths, "paths.txt"),
        "imgrade train": cli("train", "--data", "DATA", "--epochs", "1", "--out", str(scratch / "never")),
        "imgrade predict (error row)": cli("predict", str(run), "DATA"),
    }


GRADES9 = ["2L", "BM", "BL", "M", "S", "L", "2S", "BS", "C"]


def run(repeats: int) -> dict[str, float]:
    """Print the table; returns the figures (``unexpected``: calls that broke the promise)."""
    from imgrade.cli import main

    figures = {"calls": 0, "slowest_ms": 0.0, "unexpected": 0}
    with tempfile.TemporaryDirectory(prefix="imgrade-special-") as tmp:
        scratch = Path(tmp)
        with contextlib.redirect_stderr(io.StringIO()):  # a tiny model for predict
            main(["data", "synth", "--out", str(scratch / "synth"), "--n", "40", "--seed", "1"])
            main(
                [
                    "train",
                    "--data",
                    str(scratch / "synth"),
                    "--epochs",
                    "1",
                    "--depth",
                    "11",
                    "--out",
                    str(scratch / "run"),
                ]
            )
        print(f"{'reader':34s} " + " ".join(f"{kind:>16s}" for kind in KINDS) + "   (median / slowest ms)")
        for reader, case in cases(scratch, scratch / "run").items():
            cells = []
            for kind, called in KINDS.items():
                times = []
                for attempt in range(repeats + 1):  # the first warms up imports and caches
                    name, call = case(kind)
                    start = time.perf_counter()
                    try:
                        with guarded():
                            said = call()
                    except (TimeoutError, MemoryError) as error:
                        said = f"{type(error).__name__}: {error}"
                    seconds = time.perf_counter() - start
                    if attempt:
                        times.append(seconds)
                    if not (f"{name} is {called}, not a regular file" in said and len(said.splitlines()) == 1):
                        figures["unexpected"] += 1
                        print(f"unexpected: {reader}, {kind}: {said[:300]!r}", file=sys.stderr)
                    elif seconds > LIMIT_S:
                        figures["unexpected"] += 1
                        print(f"unexpected: {reader}, {kind}: {seconds:.2f} s, over {LIMIT_S:g} s", file=sys.stderr)
                figures["calls"] += len(times)
                figures["slowest_ms"] = max(figures["slowest_ms"], 1000 * max(times))
                cells.append(f"{1000 * statistics.median(times):7.2f} / {1000 * max(times):6.2f}")
            print(f"{reader:34s} " + " ".join(f"{cell:>16s}" for cell in cells), flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per reader and kind (default 20)")
    figures = run(parser.parse_args().repeats)
    print(
        f"{figures['calls']:,} calls, slowest {figures['slowest_ms']:.1f} ms, "
        f"{figures['unexpected'] or 'no'} unexpected outcomes (a hang, an endless read, not one line, over {LIMIT_S:g} s)"
    )
    return 1 if figures["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
