"""Run-folder files besides checkpoints: the saved split and the per-epoch history."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
from pathlib import Path

import numpy as np

from imgrade.core.checkpoint import save_json
from imgrade.core.errors import CheckpointError, ConfigError, DataError, OutputError
from imgrade.core.io import write_csv

MEMBERS = "members"
"""The folder of an ensemble run that holds its members, each a complete run: m0, m1, ..."""


def member_dir(run: Path, index: int) -> Path:
    """Where ensemble member ``index`` of ``run`` lives.

    >>> member_dir(Path("runs/e"), 2).as_posix()
    'runs/e/members/m2'
    """
    return Path(run) / MEMBERS / f"m{index}"


def ensemble_members(run: Path) -> list[Path]:
    """``run/members/m0``, ``m1``, ... in number order (m10 after m9); empty for a run without members."""
    folder = Path(run) / MEMBERS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"m\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[1:]))


def save_split(path: Path, split: dict[str, np.ndarray], imageset) -> None:
    save_json(
        path,
        {
            "n": len(imageset),
            "source": imageset.source,
            **{name: index.tolist() for name, index in split.items()},
            "ids": {name: [imageset.ids[i] for i in index] for name, index in split.items()},
        },
    )


def load_split(run: Path, imageset) -> dict[str, np.ndarray]:
    path = run / "split.json"
    try:
        saved = json.loads(path.read_text())
        names = ("train", "val", "test", "cal") if "cal" in saved else ("train", "val", "test")
        split = {name: np.asarray(saved[name], dtype=np.int64) for name in names}
        same = saved["n"] == len(imageset) and all(
            [imageset.ids[i] for i in split[name]] == saved["ids"][name] for name in split
        )
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the run's split cannot be recovered; retrain") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise CheckpointError(f"{path} is corrupt: the run's split cannot be recovered; retrain") from None
    if not same:
        raise DataError(
            f"the images at the run's data path differ from those it was trained on ({saved.get('source')}): "
            "pass --data to evaluate on a whole set instead"
        )
    return split


def write_history(path: Path, history: list[dict]) -> None:
    write_csv(path, history)


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


LOCK_FILE = ".imgrade.lock"


@contextlib.contextmanager
def run_lock(out: Path, verb: str = "train"):
    """Hold an exclusive lock on the run folder ``out`` (created if missing) for the block.

    ``imgrade train`` holds it while it writes the run; ``calibrate``, ``evaluate`` and ``export``
    hold it while they rewrite a run or write into it (``verb`` names the holder). A second
    command into a held folder fails at once with a clear message instead of interleaving its
    files with the first one's. The lock is an ``flock`` on ``out/.imgrade.lock``: the kernel
    releases it when the process ends, even by SIGKILL, so a crash never leaves a stale lock.
    Where ``fcntl`` does not exist (Windows) there is no lock. On the way out, a folder the block
    created and left empty is removed again.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    created = not out.exists()
    fix = "or choose another --out" if verb == "train" else f"then run imgrade {verb} again"
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK_FILE, "a+")
    except OSError as error:
        raise OutputError(
            f"cannot write in the run folder {out} ({error.strerror}): check the path and its permissions, "
            + ("or choose another --out" if verb == "train" else "or copy the run somewhere writable")
        ) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _holder(handle.read().strip())
            other = "another " if holder.startswith(f"imgrade {verb} ") else ""
            raise ConfigError(f"{out} is in use by {other}{holder}: wait for it to finish, {fix}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"imgrade {verb} (pid {os.getpid()})")
        handle.flush()
        yield
    finally:
        handle.close()
        if created and [p.name for p in out.iterdir()] == [LOCK_FILE]:
            (out / LOCK_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()


def _holder(text: str) -> str:
    """Who holds a run's lock, from its lock file: ``imgrade train (pid 12)``; files written before
    the verb was named there say ``pid 12``.

    >>> _holder("imgrade calibrate (pid 12)"), _holder("pid 12"), _holder("")
    ('imgrade calibrate (pid 12)', 'imgrade train (pid 12)', 'another imgrade command')
    """
    if text.startswith("imgrade "):
        return text
    return f"imgrade train ({text})" if text.startswith("pid ") else "another imgrade command"


def run_folder(run: str | Path) -> Path:
    """The folder of a run given as its folder or as a .pt checkpoint in it.

    >>> run_folder("runs/p1").as_posix(), run_folder("runs/p1/best.pt").as_posix()
    ('runs/p1', 'runs/p1')
    """
    run = Path(run)
    return run.parent if run.suffix == ".pt" and not run.is_dir() else run


@contextlib.contextmanager
def rewriting_run(run: str | Path, verb: str, writes: bool = True):
    """Hold ``run``'s lock (:func:`run_lock`) while ``imgrade verb`` rewrites it or writes into it, so
    it never does while a training writes the run; ``writes`` False: nothing to hold. A run that
    does not exist is not locked (nor created): opening it says so.

    Raises:
        ConfigError: another command (a training) holds the run: wait for it to finish.
    """
    folder = run_folder(run)
    if not writes or not folder.is_dir():
        yield
        return
    with run_lock(folder, verb):
        yield


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies in it, links resolved.

    >>> inside("runs/p1/m.onnx", "runs/p1"), inside("exports/m.onnx", "runs/p1")
    (True, False)
    """
    return Path(path).resolve().is_relative_to(Path(folder).resolve())
