"""A trained grader: checkpoint + preprocessing + decoding, from images to scores and grades."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgrade.core.checkpoint import find_run_checkpoint, load_checkpoint
from imgrade.core.device import resolve_device
from imgrade.core.errors import CheckpointError
from imgrade.core.grades import round_to_grades
from imgrade.core.preprocess import nhwc_to_tensor, to_input
from imgrade.models.factory import build_model


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
                head=model_cfg["head"],
                hidden=model_cfg["hidden"],
                loss=model_cfg["loss"],
                num_grades=len(ckpt["grade_names"]) if ckpt["grade_names"] else None,
            )
            model.load_state_dict(ckpt["model_state"])
        except (KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"{path} does not hold a model this imgrade can rebuild ({str(e).splitlines()[0][:120]}): retrain") from None
        target = resolve_device(device)
        model.to(target).eval()
        return cls(model, ckpt["mean_image"].float(), ckpt["grade_names"], int(ckpt["image_size"]), target, ckpt)

    @torch.no_grad()
    def scores(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Scores (N,) on the grade axis for uint8 images (N, H, W, 3) or tensors (N, 3, H, W)."""
        x = nhwc_to_tensor(images) if isinstance(images, np.ndarray) else images
        out = []
        for i in range(0, len(x), batch_size):
            outputs = self.model(to_input(x[i : i + batch_size], self.mean, self.device))
            out.append(self.model.decode(outputs).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def grades(self, scores: np.ndarray) -> np.ndarray:
        """Grade indexes for scores (rounding to the nearest grade)."""
        assert self.grade_names is not None
        return round_to_grades(scores, len(self.grade_names))
