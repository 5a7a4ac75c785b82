"""A checkpoint, typed: what best.pt, last.pt or an ensemble member's checkpoint holds.

Every verb reads and writes checkpoints as a :class:`Checkpoint`; the plain dict exists only at
the file boundary (``imgrade.core.checkpoint``). ``imgrade.runtime.run.RunFolder`` opens a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from imgrade.calibration.decision import Calibration
from imgrade.config import RunConfig
from imgrade.core.checkpoint import BEST, load_checkpoint, save_checkpoint
from imgrade.core.errors import CheckpointError, ConfigError
from imgrade.core.names import MODEL_CARD
from imgrade.core.registry import backbone_names, task_names

WAYS = {False: "plain", True: "tta"}
"""A checkpoint's calibrations by way of grading: on plain outputs, or test-time augmented ones."""


def run_name(checkpoint_path: Path) -> str:
    """A run by its folder's name (``folder/file.pt`` for another checkpoint than best.pt): what an
    export names it by, never a path of this machine.

    >>> run_name(Path("/data/runs/p1/best.pt")), run_name(Path("/data/runs/p1/last.pt"))
    ('p1', 'p1/last.pt')
    """
    folder = checkpoint_path.parent.name
    return folder if checkpoint_path.name == BEST else f"{folder}/{checkpoint_path.name}"


def read_model_card(folder: Path) -> str | None:
    """The run's model_card.md, or None where it has none (written under another locale: still read)."""
    card = folder / MODEL_CARD
    return card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None


@dataclass
class TrainingState:
    """What last.pt keeps beyond the model to continue training exactly where it stopped."""

    optimizer_state: dict[str, Any]
    generator_state: Any
    """The shuffling and augmentation generator's state (a uint8 tensor)."""
    history: list[dict[str, Any]]
    """One row per epoch so far: epoch, train_loss, val_loss, val_mae, lr, seconds."""
    best_val_loss: float
    finished: bool
    """Whether the last epoch has been trained."""
    ema_state: dict[str, Any] | None = None
    """``--ema``: the moving average of the weights."""
    ema_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plain dict a checkpoint holds (the EMA entries only where there is an average)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingState:
        """Raises KeyError naming a missing entry."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d or f.default is MISSING})


@dataclass
class Checkpoint:
    """What a checkpoint holds: the model and everything needed to grade with it.

    ``model_state`` and ``mean_image`` are torch tensors; the rest are plain values. ``training``
    is last.pt's state to resume from (optimizer, generator, history, ...); None in best.pt.
    """

    config: RunConfig
    grade_names: list[str] | None
    """The grades in order; None for a continuous target."""
    image_size: int | None
    """The side every photo is resized to; None only in a checkpoint that holds weights alone (--init)."""
    mean_image: Any
    """(3, S, S) float tensor: the training set's per-pixel mean, subtracted from every input (None as above)."""
    model_state: dict[str, Any]
    head_state: dict[str, Any] = field(default_factory=dict)
    """The head's own plain values beyond its weights (``Head.state``), e.g. the axes head's grade table."""
    members: int = 1
    """How many networks grade together (an ensemble's ``members.I.*`` weights)."""
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    """One calibration per way of grading (``WAYS``), fitted after training."""
    version: str = "unknown"
    """The imgrade version that trained the model."""
    data_source: str | None = None
    epoch: int | None = None
    val_loss: float | None = None
    member_epochs: list[int] | None = None
    training: TrainingState | None = None

    @property
    def task(self) -> str:
        return self.config.model.task

    def calibration(self, tta: bool = False) -> Calibration | None:
        """The calibration fitted on plain (or, with ``tta``, test-time augmented) outputs."""
        return self.calibrations.get(WAYS[tta])

    def with_calibration(self, calibration: Calibration | None, tta: bool = False) -> Checkpoint:
        """A copy with ``calibration`` as the plain (or test-time augmented) one."""
        calibrations = {**self.calibrations, WAYS[tta]: calibration}
        return dataclasses.replace(self, calibrations={k: v for k, v in calibrations.items() if v is not None})

    def replace(self, **changes: Any) -> Checkpoint:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------------ the file

    def to_payload(self) -> dict[str, Any]:
        """The plain dict ``save_checkpoint`` writes (format 2)."""
        return {
            "imgrade_version": self.version,
            "config": self.config.to_dict(),
            "grade_names": self.grade_names,
            "image_size": self.image_size,
            "mean_image": self.mean_image,
            "data_source": self.data_source,
            "head_state": self.head_state,
            "members": self.members,
            "member_epochs": self.member_epochs,
            "calibrations": {way: c.to_dict() for way, c in self.calibrations.items()},
            "model_state": self.model_state,
            "epoch": self.epoch,
            "val_loss": self.val_loss,
            "training": self.training.to_dict() if self.training is not None else None,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str | Path = "checkpoint") -> Checkpoint:
        """The checkpoint a loaded payload holds (any format ``load_checkpoint`` reads).

        Raises:
            CheckpointError: an entry is missing or not what imgrade writes, naming ``source``.
        """
        _check_registered(payload, source)
        try:
            calibrations = {
                way: Calibration.from_dict(found) for way, found in (payload.get("calibrations") or {}).items()
            }
            return cls(
                config=RunConfig.from_dict(payload["config"], source=f"{source} config"),
                grade_names=list(payload["grade_names"]) if payload["grade_names"] is not None else None,
                image_size=int(payload["image_size"]) if payload.get("image_size") is not None else None,
                mean_image=payload.get("mean_image"),
                model_state=payload["model_state"],
                head_state=dict(payload.get("head_state") or {}),
                members=int(payload.get("members") or 1),
                calibrations={way: c for way, c in calibrations.items() if c is not None and way in WAYS.values()},
                version=str(payload.get("imgrade_version") or "unknown"),
                data_source=payload.get("data_source"),
                epoch=payload.get("epoch"),
                val_loss=payload.get("val_loss"),
                member_epochs=payload.get("member_epochs"),
                training=TrainingState.from_dict(payload["training"]) if payload.get("training") else None,
            )
        except KeyError as e:
            raise CheckpointError(f"{source} has no {e.args[0]!r} entry: retrain with this imgrade") from None
        except ConfigError as e:
            raise CheckpointError(f"{source} holds a config this imgrade cannot read ({e}): retrain") from None
        except (TypeError, ValueError, AttributeError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(
                f"{source} is not a checkpoint imgrade wrote ({' '.join(str(e).split())[:120]}): retrain"
            ) from None

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read the checkpoint at ``path`` (safely: see ``load_checkpoint``)."""
        return cls.from_payload(load_checkpoint(path), path)

    def save(self, path: str | Path) -> None:
        """Write this checkpoint to ``path`` atomically."""
        save_checkpoint(path, self.to_payload())


def _check_registered(payload: dict[str, Any], source: str | Path) -> None:
    """A run whose task or backbone is not registered in this process says so, and how to fix it,
    rather than that its config is bad.

    Raises:
        CheckpointError: naming the unregistered task or backbone.
    """
    model = (payload.get("config") or {}).get("model") if isinstance(payload.get("config"), dict) else None
    if not isinstance(model, dict):
        return
    task, backbone = model.get("task"), model.get("backbone", "reference")
    if isinstance(task, str) and task not in task_names():
        raise CheckpointError(
            f"{source} was trained with --task {task}, which is not registered here: register it "
            "(imgrade.core.registry.register_head) before loading the run"
        )
    if isinstance(backbone, str) and backbone.partition(":")[0] not in backbone_names():
        raise CheckpointError(
            f"{source} was trained with --backbone {backbone}, which is not registered here: "
            "register it (imgrade.core.registry.register_backbone) before loading the run"
        )
