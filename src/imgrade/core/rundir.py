"""Run-folder files besides checkpoints: the saved split and the per-epoch history."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from imgrade.core.checkpoint import save_json
from imgrade.core.errors import CheckpointError, DataError
from imgrade.core.io import write_text


def save_split(path: Path, split: dict[str, np.ndarray], imageset) -> None:
    save_json(path, {
        "n": len(imageset),
        "source": imageset.source,
        **{name: index.tolist() for name, index in split.items()},
        "ids": {name: [imageset.ids[i] for i in index] for name, index in split.items()},
    })


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
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
