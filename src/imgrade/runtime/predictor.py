"""A trained grader: checkpoint + preprocessing + decoding, from images to scores, grades and sets."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from imgrade.core.checkpoint import find_run_checkpoint, load_checkpoint
from imgrade.core.device import resolve_device
from imgrade.core.errors import CheckpointError
from imgrade.core.names import MODEL_CARD
from imgrade.core.preprocess import nhwc_to_tensor, to_input
from imgrade.core.registry import backbone_names
from imgrade.models.axes import GradeAxes
from imgrade.models.backbones import check_backbone, describe
from imgrade.models.ensemble import EnsembleModel, TTAModel
from imgrade.models.factory import build_model, head_settings
from imgrade.runtime.grading import CPU_BATCH, GPU_BATCH, Grader, Outputs

logger = logging.getLogger(__name__)

__all__ = ["CALIBRATION_TTA", "Outputs", "Predictor"]

CALIBRATION_TTA = "calibration_tta"
"""The checkpoint entry with the cut points and grade sets fitted on test-time augmented outputs
(beside ``calibration``, fitted on plain ones): averaging views moves the scores a little."""


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
    network: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    """What ``outputs`` runs: ``model`` itself, or its frozen trace after ``prepare_for_serving``."""

    tta: bool = False
    """Grade each image as the average over flipped and shifted views (``TTAModel``), with the
    calibration fitted that way."""

    model_card: str | None = None
    """The run's model_card.md, read when the run was loaded; None where the run has none."""

    @classmethod
    def from_run(cls, run: str | Path, device: str = "auto", tta: bool | None = None) -> Predictor:
        """Load ``run``'s best checkpoint (a run folder or a .pt file).

        An ensemble's checkpoint holds every member; they are graded as one network. With ``tta``
        each image is graded as the average of a few views of it (see ``models.ensemble.TTAModel``);
        None: as the run's ``calibrate.tta`` says (off for runs that predate it).

        Raises:
            CheckpointError: the checkpoint cannot be rebuilt, or ``tta`` is asked of a run whose
                calibration was fitted without it (calibrate it again).
        """
        path = find_run_checkpoint(run)
        ckpt = load_checkpoint(path)
        if tta is None:
            tta = bool(((ckpt.get("config") or {}).get("calibrate") or {}).get("tta", False))
        backbone = ((ckpt.get("config") or {}).get("model") or {}).get(
            "backbone", "reference"
        )  # older runs: none saved
        if isinstance(backbone, str) and backbone.partition(":")[0] not in backbone_names():
            raise CheckpointError(
                f"{path} was trained with --backbone {backbone}, which is not registered here: "
                "register it (imgrade.core.registry.register_backbone) before loading the run"
            )
        if isinstance(backbone, str):
            check_backbone(backbone)  # e.g. a missing timm says how to install it, not that the checkpoint is bad
        try:
            model_cfg = ckpt["config"]["model"]
            grade_names = ckpt["grade_names"]
            members = int(ckpt.get("ensemble") or 1)

            def network():
                return build_model(
                    depth=model_cfg["depth"],
                    task=model_cfg["task"],
                    head=model_cfg["head"],
                    loss=model_cfg["loss"],
                    num_grades=len(grade_names) if grade_names else None,
                    backbone=backbone,  # no pretrained weights: the checkpoint holds them all
                    image_size=int(ckpt["image_size"]),
                    **head_settings(model_cfg),
                    # the axes head's grade table travels in the checkpoint: no CSV needed here
                    grade_axes=GradeAxes.from_dict(ckpt["grade_axes"]) if model_cfg["task"] == "axes" else None,
                )

            model = network() if members == 1 else EnsembleModel([network() for _ in range(members)])
            image_size = int(ckpt["image_size"])
            mean = ckpt["mean_image"].float()  # (3, H, W)
            if tuple(mean.shape) != (3, image_size, image_size):
                raise ValueError(f"a mean_image of shape {tuple(mean.shape)} for image_size {image_size}")
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # ValueError includes build_model's ConfigError
            reason = f"no {e.args[0]!r} entry" if isinstance(e, KeyError) and e.args else " ".join(str(e).split())[:120]
            raise CheckpointError(
                f"{path} does not hold a model this imgrade can rebuild ({reason or type(e).__name__}): retrain"
            ) from None
        try:
            model.load_state_dict(ckpt["model_state"])
        except (KeyError, RuntimeError, TypeError, AttributeError) as e:
            network = describe(backbone, model_cfg["depth"])
            raise CheckpointError(
                f"{path} holds weights that do not fit the {network} {model_cfg['task']} network its "
                f"config describes ({_mismatch(model, ckpt.get('model_state'), e)}): retrain, or pass the checkpoint "
                "that config was saved with"
            ) from None
        if (
            tta
            and grade_names is not None
            and ckpt.get("calibration") is not None
            and ckpt.get(CALIBRATION_TTA) is None
        ):
            raise CheckpointError(
                f"{path} was calibrated without test-time augmentation: run `imgrade calibrate {run}` "
                "(it fits both), or grade without --tta"
            )
        target = resolve_device(device)
        model.to(target).eval()
        card = path.parent / MODEL_CARD
        card_text = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None
        predictor = cls(model, mean, grade_names, image_size, target, ckpt, model_card=card_text)
        return predictor.with_tta() if tta else predictor

    def with_tta(self) -> Predictor:
        """This grader under test-time augmentation (the same network, ``TTAModel`` around it),
        with the calibration fitted that way."""
        if self.tta:
            return self
        model = TTAModel(self.model, self.mean).to(self.device).eval()
        return dataclasses.replace(self, model=model, network=None, tta=True)

    @property
    def members(self) -> int:
        """How many networks grade together (1 unless the run is an ensemble)."""
        return int(self.checkpoint.get("ensemble") or 1)

    def prepare_for_serving(self) -> None:
        """On the CPU, run a traced and frozen copy of the network from now on.

        Freezing folds each BatchNorm that follows a conv into it and pre-packs
        the weights for oneDNN: one photo took 1.3 ms against 2.0 ms eager (2 cores; see
        benchmarks/throughput.py), for about 0.7 s of set-up. The copy is checked against the
        eager network on a few images; should tracing fail or disagree, the eager network stays.
        """
        if self.device.type != "cpu" or self.network is not None:
            return
        size = self.image_size
        probe = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0)).sub_(0.5)
        probe = probe.contiguous(memory_format=torch.channels_last)
        try:
            # torch.jit is deprecated for torch.compile, but compile took 7 s per batch size here
            # and then graded one photo in 340 ms: the trace stays until that changes
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(self.model, probe[:1])))
                expected, got = self.model(probe), frozen(probe)
            if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
                raise RuntimeError(
                    f"the frozen network differs from the eager one by {float((got - expected).abs().max()):.2g}"
                )
        except Exception as e:  # any failure here only costs speed: say so and grade with the eager network
            logger.info(f"imgrade: grading with the eager network ({' '.join(str(e).split())[:160]})")
            return
        self.network = frozen

    @property
    def calibration(self) -> dict | None:
        return self.checkpoint.get(CALIBRATION_TTA if self.tta else "calibration")

    @property
    def task(self) -> str:
        return self.checkpoint["config"]["model"]["task"]

    @property
    def version(self) -> str:
        return str(self.checkpoint.get("imgrade_version", "unknown"))

    @torch.no_grad()
    def outputs(self, images: np.ndarray | torch.Tensor, batch_size: int | None = None) -> Outputs:
        """Run the network on uint8 images (N, H, W, 3) or tensors (N, 3, H, W), ``batch_size`` per pass.

        Images are read a pass at a time: a memory-mapped set (or its ``ImageRows``) is never read whole.
        """
        batch_size = batch_size or (GPU_BATCH if torch.device(self.device).type == "cuda" else CPU_BATCH)
        assert len(images) > 0, "callers check for an empty set first"
        scores, probabilities, native = [], [], []
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            x = x if isinstance(x, torch.Tensor) else nhwc_to_tensor(np.asarray(x))  # (B, 3, H, W) uint8
            out = (self.model if self.network is None else self.network)(to_input(x, self.mean, self.device))
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


def _mismatch(model: torch.nn.Module, state, error: Exception) -> str:
    """What ``load_state_dict`` refused, in short (its own message lists every key)."""
    if not isinstance(state, dict):
        return "no 'model_state' entry" if state is None else f"model_state is a {type(state).__name__}"
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and getattr(state[key], "shape", None) != expected[key].shape]
    if not (missing or unexpected or reshaped):
        return " ".join(str(error).split())[:160] or type(error).__name__
    counts = ", ".join(
        f"{len(keys)} {kind}"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("reshaped", reshaped))
        if keys
    )
    return f"{counts} tensors, e.g. {str((missing + unexpected + reshaped)[0])[:80]}"
