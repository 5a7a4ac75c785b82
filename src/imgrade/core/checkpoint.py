"""Run folders and checkpoints at the file boundary: atomic writes, safe loads, a format version.

The payload is a plain dict here and nowhere else: ``imgrade.runtime.run.Checkpoint`` is the typed
form every verb reads and writes. Format 2 is written; format 1 (imgrade 0.1 before the typed
checkpoint) is still read, upgraded to format 2's layout as it loads (``upgrade``).

A run folder holds:
    config.yaml     the resolved configuration
    split.json      train/val/test indexes (and ids) into the data set
    best.pt         the model with the lowest validation loss: what evaluate and predict use
    last.pt         the latest epoch's full training state: what --resume continues from
    history.csv     one row per epoch
    loss_curve.png  train vs validation loss
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from imgrade.core.errors import CheckpointError
from imgrade.core.io import atomic_write

FORMAT_VERSION = 2
READS = (1, 2)
"""The checkpoint formats this imgrade loads."""

TRAINING_KEYS = (
    "optimizer_state",
    "generator_state",
    "history",
    "best_val_loss",
    "finished",
    "ema_state",
    "ema_steps",
)
"""Format 1's top-level entries that format 2 keeps under ``training`` (last.pt's state to resume)."""
BEST = "best.pt"
LAST = "last.pt"
SAFE_TORCH = (2, 10)
"""The oldest torch (major, minor) whose ``torch.load(weights_only=True)`` has no known way to run code:
2.6 fixed CVE-2025-32434 and 2.10 CVE-2026-24747. pip leaves an older torch in place in an existing
environment, so :func:`require_safe_torch` checks again before every load."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors and plain Python values only, format 2's layout) to ``path`` atomically."""
    payload = {**payload, "format_version": FORMAT_VERSION}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def require_safe_torch(path: str | Path) -> None:
    """Refuse to unpickle ``path`` with a torch older than ``SAFE_TORCH``.

    Raises:
        CheckpointError: the installed torch is older than ``SAFE_TORCH``.
    """
    version = str(torch.__version__)
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < SAFE_TORCH:
        floor = ".".join(map(str, SAFE_TORCH))
        raise CheckpointError(
            f"refusing to load {path} with torch {version}, whose torch.load(weights_only=True) a crafted file "
            f"can make run code (CVE-2025-32434, CVE-2026-24747): upgrade torch to {floor} or later "
            f"(pip install 'torch>={floor}')"
        )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` (nothing in it can run code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train a model first with `imgrade train --out {path.parent}`")
    require_safe_torch(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says what matters
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same to the user
        reason = _load_failure(e)
        if "GLOBAL" in reason:
            raise CheckpointError(
                f"{path} holds Python objects that could run code when loaded ({reason}): imgrade refuses them; "
                "use a checkpoint written by `imgrade train`"
            ) from None
        raise CheckpointError(
            f"{path} is not a readable imgrade checkpoint ({reason}): retrain or restore the file"
        ) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path} is not an imgrade checkpoint (no format_version): retrain with this imgrade")
    version = payload["format_version"]
    if type(version) is not int or version not in READS:  # a tensor here would not compare to one bool
        shown = version if type(version) is int else f"of type {type(version).__name__}"
        raise CheckpointError(
            f"{path} has checkpoint format {shown} but this imgrade reads formats "
            f"{', '.join(map(str, READS))}: retrain, or use the imgrade version that wrote it"
        )
    return upgrade(payload)


def upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload of any format this imgrade reads, in the layout of ``FORMAT_VERSION``.

    Format 1 kept the calibrations as ``calibration`` and ``calibration_tta``, an ensemble's size
    as ``ensemble``, the axes head's table as ``grade_axes`` and the training state at the top.

    >>> new = upgrade({"format_version": 1, "ensemble": None, "calibration": {"thresholds": None},
    ...                "calibration_tta": None, "grade_axes": {"axes": {}}, "task": "axes", "history": []})
    >>> new == {"format_version": 2, "members": 1, "calibrations": {"plain": {"thresholds": None}},
    ...         "head_state": {"grade_axes": {"axes": {}}}, "training": {"history": []}}
    True
    """
    if payload["format_version"] == FORMAT_VERSION:
        return payload
    old = dict(payload)
    calibrations = {"plain": old.pop("calibration", None), "tta": old.pop("calibration_tta", None)}
    axes = old.pop("grade_axes", None)
    old.pop("task", None)  # the config says it
    members = int(old.pop("ensemble", None) or 1)
    training = {key: old.pop(key) for key in TRAINING_KEYS if key in old}
    return {
        **old,
        "format_version": FORMAT_VERSION,
        "members": members,
        "calibrations": {way: found for way, found in calibrations.items() if found is not None},
        "head_state": {"grade_axes": axes} if axes is not None else {},
        "training": training or None,
    }


def _load_failure(error: Exception) -> str:
    """The line of torch.load's error that says what is wrong, without its advice on weights_only."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    reasons = [line for line in lines if not line.startswith(advice)] or lines
    return reasons[0][:160] if reasons else type(error).__name__


def find_run_checkpoint(run: str | Path) -> Path:
    """The checkpoint to use for a run folder (best.pt), or the .pt file itself."""
    run = Path(run)
    if run.is_file() and run.suffix == ".pt":
        return run
    if not run.exists():
        raise CheckpointError(
            f"run folder {run} does not exist: check the path, or train with `imgrade train --out {run}`"
        )
    if not run.is_dir():
        raise CheckpointError(
            f"{run} is neither a run folder nor a .pt checkpoint: pass the folder `imgrade train --out` wrote"
        )
    best = run / BEST
    if not best.is_file():
        hint = (
            " (training was interrupted before its first epoch ended: resume with `imgrade train --resume`)"
            if (run / "config.yaml").is_file()
            else ""
        )
        raise CheckpointError(f"run folder {run} has no checkpoint {BEST}{hint}: train a model into it first")
    return best


def save_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
