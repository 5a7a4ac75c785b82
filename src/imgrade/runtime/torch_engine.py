"""A trained grader: checkpoint + preprocessing + decoding, from images to scores, grades and sets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgrade.calibration.decision import Calibration
from imgrade.core.checkpoint import find_run_checkpoint
from imgrade.core.device import resolve_device
from imgrade.core.errors import CheckpointError
from imgrade.core.preprocess import nhwc_to_tensor, to_input
from imgrade.models.backbones import check_backbone, describe
from imgrade.models.ensemble import EnsembleModel, TTAModel
from imgrade.models.factory import build_model
from imgrade.runtime.grading import CPU_BATCH, GPU_BATCH, Engine, Outputs
from imgrade.runtime.run_checkpoint import Checkpoint, read_model_card, run_name

__all__ = ["Outputs", "TorchEngine", "build_network"]


def build_network(ckpt: Checkpoint) -> torch.nn.Module:
    """The network ``ckpt`` describes, with fresh weights: one, or its ensemble's members as one.

    Raises:
        ConfigError: the checkpoint's model cannot be built here.
    """
    model_cfg = ckpt.config.model

    def network() -> torch.nn.Module:
        return build_model(
            depth=model_cfg.depth,
            task=model_cfg.task,
            head=model_cfg.head,
            num_grades=len(ckpt.grade_names) if ckpt.grade_names else None,
            backbone=model_cfg.backbone,  # no pretrained weights: the checkpoint holds them all
            image_size=ckpt.image_size,
            state=ckpt.head_state,  # e.g. the axes head's grade table: no CSV needed here
            **model_cfg.head_settings(),
        )

    return network() if ckpt.members == 1 else EnsembleModel([network() for _ in range(ckpt.members)])


@dataclass
class TorchEngine(Engine):
    """Grades images with a trained PyTorch model. Build it with :meth:`from_run`."""

    runtime = "torch"

    model: torch.nn.Module
    mean: torch.Tensor  # (3, H, W)
    grade_names: list[str] | None
    image_size: int
    device: torch.device
    checkpoint: Checkpoint

    tta: bool = False
    """Grade each image as the average over flipped and shifted views (``TTAModel``), with the
    calibration fitted that way."""

    model_card: str | None = None
    """The run's model_card.md, read when the run was loaded; None where the run has none."""

    source: str | None = None
    """The run by its folder's name (``folder/file.pt`` for a checkpoint given as a file): what an
    export names it by, never a path of this machine; None when not loaded from a run."""

    @classmethod
    def from_run(
        cls, run: str | Path, device: str = "auto", tta: bool | None = None, threads: int | None = None
    ) -> TorchEngine:
        """Load ``run``'s best checkpoint (a run folder or a .pt file); see :meth:`from_checkpoint`.
        ``threads``: torch's CPU threads for this process (None: as they are)."""
        if threads:
            torch.set_num_threads(int(threads))
        path = find_run_checkpoint(run)
        return cls.from_checkpoint(Checkpoint.load(path), path, device=device, tta=tta)

    @classmethod
    def from_checkpoint(
        cls, ckpt: Checkpoint, path: Path, device: str = "auto", tta: bool | None = None
    ) -> TorchEngine:
        """The network of ``ckpt`` (read from ``path``), rebuilt and on ``device``.

        An ensemble's checkpoint holds every member; they are graded as one network. With ``tta``
        each image is graded as the average of a few views of it (see ``models.ensemble.TTAModel``);
        None: as the run's ``calibrate.tta`` says.

        Raises:
            CheckpointError: the checkpoint cannot be rebuilt, or ``tta`` is asked of a run whose
                calibration was fitted without it (calibrate it again).
        """
        if tta is None:
            tta = ckpt.config.calibrate.tta
        model_cfg = ckpt.config.model
        backbone = model_cfg.backbone  # a registered one: Checkpoint.load says so otherwise
        check_backbone(backbone)  # e.g. a missing timm says how to install it, not that the checkpoint is bad
        try:
            for entry in ("image_size", "mean_image"):
                if getattr(ckpt, entry) is None:
                    raise KeyError(entry)
            model = build_network(ckpt)
            mean = ckpt.mean_image.float()  # (3, H, W)
            if tuple(mean.shape) != (3, ckpt.image_size, ckpt.image_size):
                raise ValueError(f"a mean_image of shape {tuple(mean.shape)} for image_size {ckpt.image_size}")
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # ValueError includes build_model's ConfigError
            reason = f"no {e.args[0]!r} entry" if isinstance(e, KeyError) and e.args else " ".join(str(e).split())[:120]
            raise CheckpointError(
                f"{path} does not hold a model this imgrade can rebuild ({reason or type(e).__name__}): retrain"
            ) from None
        try:
            model.load_state_dict(ckpt.model_state)
        except (KeyError, RuntimeError, TypeError, AttributeError) as e:
            network = describe(backbone, model_cfg.depth)
            raise CheckpointError(
                f"{path} holds weights that do not fit the {network} {model_cfg.task} network its "
                f"config describes ({_mismatch(model, ckpt.model_state, e)}): retrain, or pass the checkpoint "
                "that config was saved with"
            ) from None
        if tta and ckpt.grade_names is not None and ckpt.calibration() is not None and ckpt.calibration(True) is None:
            raise CheckpointError(
                f"{path} was calibrated without test-time augmentation: run `imgrade calibrate {path.parent}` "
                "(it fits both), or grade without --tta"
            )
        target = resolve_device(device)
        model.to(target).eval()
        card, source = read_model_card(path.parent), run_name(path)
        engine = cls(model, mean, ckpt.grade_names, ckpt.image_size, target, ckpt, model_card=card, source=source)
        return engine.with_tta() if tta else engine

    def with_tta(self) -> TorchEngine:
        """This grader under test-time augmentation (the same network, ``TTAModel`` around it),
        with the calibration fitted that way."""
        if self.tta:
            return self
        model = TTAModel(self.model, self.mean).to(self.device).eval()
        return dataclasses.replace(self, model=model, tta=True)

    @property
    def members(self) -> int:
        """How many networks grade together (1 unless the run is an ensemble)."""
        return self.checkpoint.members

    def for_serving(self, threads: int | None = None, spinning: bool | None = None) -> Engine:
        """On a CPU, this network exported to ONNX in memory and graded by ONNX Runtime, which
        answers a photo at a time sooner than eager PyTorch (``benchmarks/serve_latency.py``
        measures both); on a GPU, this grader.

        The export takes a few seconds and writes nothing; the ONNX grader carries this one's
        calibration (the TTA one under ``tta``), grade names, model card and version, and is
        checked against this network as ``imgrade export`` checks a file. Should the export, the
        check or ONNX Runtime fail, one INFO line says why and this grader is returned
        (``imgrade.runtime.onnx_export.serving_grader``).

        Args:
            threads: ONNX Runtime's intra-op threads (None: chosen, see ``OnnxEngine.from_file``).
            spinning: whether its idle threads spin, waiting for work (None: ONNX Runtime's default).
        """
        if self.device.type != "cpu":
            return self
        from imgrade.runtime.onnx_export import serving_grader  # export.py imports this module

        return serving_grader(self, threads=threads, spinning=spinning)

    @property
    def calibration(self) -> Calibration | None:
        return self.checkpoint.calibration(self.tta)

    @property
    def task(self) -> str:
        return self.checkpoint.task

    @property
    def resize_mode(self) -> str:
        """How the run made photos square (its ``data.resize``): every photo graded is made square so."""
        return self.checkpoint.config.data.resize

    @property
    def version(self) -> str:
        return self.checkpoint.version

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
            out = self.model(to_input(x, self.mean, self.device))
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

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(N, D) the backbone's pooled features of uint8 images (N, H, W, 3), ``batch_size`` per pass:
        an ensemble's members' side by side, of the image itself under TTA."""
        batch_size = batch_size or (GPU_BATCH if torch.device(self.device).type == "cuda" else CPU_BATCH)
        model = self.model.model if isinstance(self.model, TTAModel) else self.model
        members = list(model.members) if isinstance(model, EnsembleModel) else [model]
        parts = []
        for i in range(0, len(images), batch_size):
            x = to_input(nhwc_to_tensor(np.asarray(images[i : i + batch_size])), self.mean, self.device)
            parts.append(torch.cat([member.features(x) for member in members], dim=1).float().cpu())  # (B, D)
        return torch.cat(parts).numpy()


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
