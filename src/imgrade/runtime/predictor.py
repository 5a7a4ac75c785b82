"""A trained grader: checkpoint + preprocessing + decoding, from images to scores, grades and sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgrade.core.checkpoint import find_run_checkpoint, load_checkpoint
from imgrade.core.device import resolve_device
from imgrade.core.errors import CheckpointError
from imgrade.core.preprocess import nhwc_to_tensor, to_input
from imgrade.models.factory import build_model
from imgrade.runtime.grading import DEFAULT_BATCH, Grader, Outputs

__all__ = ["Outputs", "Predictor"]


@dataclass
class Predictor(Grader):
    """Grades images with a trained PyTorch model. Build it with :meth:`from_run`."""

    runtime = "torch"

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
    def calibration(self) -> dict | None:
        return self.checkpoint.get("calibration")

    @property
    def task(self) -> str:
        return self.checkpoint["config"]["model"]["task"]

    @property
    def version(self) -> str:
        return str(self.checkpoint.get("imgrade_version", "unknown"))

    @torch.no_grad()
    def outputs(self, images: np.ndarray | torch.Tensor, batch_size: int = DEFAULT_BATCH) -> Outputs:
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
