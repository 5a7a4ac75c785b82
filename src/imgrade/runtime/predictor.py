"""A trained grader: checkpoint + preprocessing + decoding, from images to scores, grades and sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgrade.calibrate import Conformal, apply_thresholds, prediction_sets
from imgrade.core.checkpoint import find_run_checkpoint, load_checkpoint
from imgrade.core.device import resolve_device
from imgrade.core.errors import CheckpointError
from imgrade.core.preprocess import nhwc_to_tensor, to_input
from imgrade.models.factory import build_model


@dataclass
class Outputs:
    """What the network says about N images."""

    scores: np.ndarray  # (N,) on the grade axis (or the continuous target)
    probabilities: np.ndarray | None  # (N, K) for classification, coral and corn; None for regression
    native: np.ndarray | None  # (N,) the head's own grade decision; None for a continuous target


@dataclass
class Predictor:
    """Grades images with a trained model. Build it with :meth:`from_run`."""

    model: torch.nn.Module
    mean: torch.Tensor  # (3, H, W)
    grade_names: list[str] | None
    image_size: int
    device: torch.device
    checkpoint: dict

    @classmethod
    def from_run(cls, run: str | Path, device: str = "auto") -> "Predictor":
        """Load ``run``'s best checkpoint (a run folder or a .pt file)."""
        path = find_run_checkpoint(run)
        ckpt = load_checkpoint(path)
        try:
            model_cfg = ckpt["config"]["model"]
            model = build_model(
                depth=model_cfg["depth"],
                task=model_cfg["task"],
                head=model_cfg["head"],
                loss=model_cfg["loss"],
                num_grades=len(ckpt["grade_names"]) if ckpt["grade_names"] else None,
            )
            model.load_state_dict(ckpt["model_state"])
        except (KeyError, RuntimeError, TypeError) as e:
            first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise CheckpointError(f"{path} does not hold a model this imgrade can rebuild ({first}): retrain") from None
        target = resolve_device(device)
        model.to(target).eval()
        return cls(model, ckpt["mean_image"].float(), ckpt["grade_names"], int(ckpt["image_size"]), target, ckpt)

    @property
    def thresholds(self) -> dict | None:
        """The calibration's cut-point choice (``ThresholdChoice.to_dict()``), if calibrated."""
        return (self.checkpoint.get("calibration") or {}).get("thresholds")

    @property
    def conformal(self) -> Conformal | None:
        found = (self.checkpoint.get("calibration") or {}).get("conformal")
        return Conformal.from_dict(found) if found else None

    @torch.no_grad()
    def outputs(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> Outputs:
        """Run the network on uint8 images (N, H, W, 3) or tensors (N, 3, H, W)."""
        x = nhwc_to_tensor(images) if isinstance(images, np.ndarray) else images
        assert len(x) > 0, "callers check for an empty set first"
        scores, probabilities, native = [], [], []
        for i in range(0, len(x), batch_size):
            out = self.model(to_input(x[i : i + batch_size], self.mean, self.device))
            scores.append(self.model.decode(out).float().cpu())
            p = self.model.probabilities(out)
            if p is not None:
                probabilities.append(p.float().cpu())
            if self.grade_names is not None:
                native.append(self.model.predict_grade(out).cpu())
        return Outputs(
            torch.cat(scores).numpy(),
            torch.cat(probabilities).numpy() if probabilities else None,
            torch.cat(native).numpy().astype(np.int64) if native else None,
        )

    def grades(self, outputs: Outputs) -> np.ndarray:
        """Grade indexes: the tuned cut points when calibration kept them, else the head's own rule."""
        assert self.grade_names is not None and outputs.native is not None
        choice = self.thresholds
        if choice and choice.get("kind") == "tuned":
            return apply_thresholds(outputs.scores, np.asarray(choice["thresholds"]))
        return outputs.native

    def sets(self, outputs: Outputs) -> np.ndarray | None:
        """Grade sets (N, K) bool with the calibrated coverage, or None when not calibrated."""
        conformal = self.conformal
        if conformal is None or self.grade_names is None:
            return None
        return prediction_sets(conformal, scores=outputs.scores, probabilities=outputs.probabilities, num_grades=len(self.grade_names))
