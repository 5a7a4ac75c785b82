"""A trained run, typed: ``RunFolder.open(path)`` -> its :class:`Checkpoint`, data, grader and calibrations.

run = RunFolder.open("runs/p1")
run.checkpoint.task, run.checkpoint.grade_names, run.checkpoint.calibration(tta=False)
imageset, split = run.data()          # the run's data set and its train/val/test split
grader = run.grader(device="cpu")     # the network, graded by PyTorch
run.save_calibration(calibration, tta=False)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrade.calibration.decision import Calibration
from imgrade.config import RunConfig
from imgrade.core.checkpoint import find_run_checkpoint
from imgrade.core.rundir import load_split
from imgrade.data.imageset import ImageSet
from imgrade.data.loader import load_dataset
from imgrade.runtime.run_checkpoint import Checkpoint, read_model_card, run_name
from imgrade.runtime.torch_engine import TorchEngine

__all__ = ["Checkpoint", "RunFolder"]


@dataclass
class RunFolder:
    """A run folder (or one .pt checkpoint) and its best checkpoint, read once."""

    path: Path
    """The run folder (the checkpoint's folder when a .pt file was given)."""
    checkpoint_path: Path
    checkpoint: Checkpoint

    @classmethod
    def open(cls, run: str | Path) -> RunFolder:
        """Open what ``imgrade train --out`` wrote: a run folder, or a .pt checkpoint in one.

        Raises:
            CheckpointError: no such run, or its checkpoint is not one imgrade can read.
        """
        path = find_run_checkpoint(run)
        return cls(path.parent, path, Checkpoint.load(path))

    @property
    def name(self) -> str:
        """The run by its folder's name: what an export names it by (see ``run_name``)."""
        return run_name(self.checkpoint_path)

    @property
    def config(self) -> RunConfig:
        return self.checkpoint.config

    def model_card(self) -> str | None:
        """The run's model_card.md, or None where it has none."""
        return read_model_card(self.path)

    def data(self, cfg: RunConfig | None = None) -> tuple[ImageSet, dict[str, np.ndarray]]:
        """The run's data set (read as ``cfg``'s data section says, default the run's) and its split."""
        imageset = load_dataset((cfg or self.config).data)
        return imageset, load_split(self.path, imageset)

    def grader(self, device: str = "auto", tta: bool | None = None) -> TorchEngine:
        """The network, graded by PyTorch; ``tta`` None: as the run was calibrated (``calibrate.tta``)."""
        return TorchEngine.from_checkpoint(self.checkpoint, self.checkpoint_path, device=device, tta=tta)

    def save_calibration(self, calibration: Calibration | None, tta: bool = False) -> Checkpoint:
        """Keep ``calibration`` as the plain (or test-time augmented) one: best.pt is read again and
        rewritten with it alone changed. Returns the checkpoint now on disk."""
        return self._save({tta: calibration})

    def save_calibrations(self, plain: Calibration | None, tta: Calibration | None) -> Checkpoint:
        """Keep both calibrations with one rewrite of best.pt."""
        return self._save({False: plain, True: tta})

    def _save(self, calibrations: dict[bool, Calibration | None]) -> Checkpoint:
        current = Checkpoint.load(self.checkpoint_path)
        for tta, calibration in calibrations.items():
            current = current.with_calibration(calibration, tta)
            self.checkpoint = self.checkpoint.with_calibration(calibration, tta)
        current.save(self.checkpoint_path)
        return current
