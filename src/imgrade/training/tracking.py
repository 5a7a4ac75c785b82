"""Experiment tracking: a run's epochs, plots and files, also sent to TensorBoard or MLflow.

history.csv is the record a run always writes; ``--log-to tensorboard,mlflow`` adds trackers
beside it. pipeline/trainer.py opens them (:func:`open_trackers`) on rank 0, calls
:meth:`Tracker.log_epoch` after each epoch and :meth:`Tracker.log_end` once the run is calibrated.
The training loop never sees them.

A resumed run logs into the same place: TensorBoard into the same folder (events after the
resumed epoch are dropped, so a crashed epoch is not shown twice), MLflow into the same run,
whose id ``mlflow.json`` in the run folder keeps.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imgrade.config import RunConfig
from imgrade.core.errors import ConfigError, OutputError
from imgrade.core.io import write_text

logger = logging.getLogger(__name__)

MLFLOW_FILE = "mlflow.json"
"""In the run folder: the MLflow run's id and tracking URI, so --resume continues that run."""

MLFLOW_STORE = "mlruns"
"""In the run folder: the MLflow store used when no tracking URI is given (a SQLite file and the artifacts)."""

ARTIFACTS = ("config.yaml", "history.csv", "data.json", "split.json", "best.pt")
"""The run's files sent to MLflow at the end (those that exist), besides its PNGs."""

MAX_ARTIFACT_BYTES = 200 * 2**20
"""A file above this size (a large best.pt) is not copied to MLflow: the run folder keeps it."""

EXTRAS = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow", "sqlalchemy", "alembic")}
"""The modules each tracker imports, all installed by ``pip install 'imgrade[NAME]'``."""


class Tracker(Protocol):
    """Where a run's progress goes besides history.csv."""

    def log_epoch(self, row: dict[str, float]) -> None:
        """One row of history.csv: epoch, train_loss, val_loss, val_mae, lr, seconds."""

    def log_image(self, path: Path, epoch: int) -> None:
        """A PNG the run has just (re)drawn, shown at ``epoch``."""

    def log_end(self, out: Path, history: list[dict]) -> None:
        """The run is trained and calibrated: its final pictures and files."""

    def close(self, failed: bool) -> None:
        """Flush and let go; ``failed`` when training stopped on an error."""


def check_installed(log_to: str | None) -> None:
    """Raise a one-line ConfigError naming the extra to install for each tracker in ``log_to``."""
    for name in tracker_names(log_to):
        for module in EXTRAS[name]:
            try:
                __import__(module)
            except ImportError:
                raise ConfigError(
                    f"--log-to {name} needs the {module} package: pip install 'imgrade[{name}]'"
                ) from None


def tracker_names(log_to: str | None) -> list[str]:
    """The trackers ``train.log_to`` names.

    >>> tracker_names("tensorboard,mlflow"), tracker_names(None)
    (['tensorboard', 'mlflow'], [])
    """
    return [name for name in (log_to or "").split(",") if name]


def open_trackers(cfg: RunConfig, out: Path, done: list[dict]) -> Trackers:
    """The trackers ``cfg.train.log_to`` names for the run in ``out``.

    ``done`` is the history of a resumed run (else empty): its last epoch is logged again (or,
    to MLflow, the epochs the run lacks), since a run stopped between last.pt and the trackers
    has it in last.pt only. The packages were checked when the run folder was (:func:`check_installed`).
    """
    made: list[Tracker] = []
    for name in tracker_names(cfg.train.log_to):
        made.append(TensorBoardTracker(cfg, out, done) if name == "tensorboard" else MlflowTracker(cfg, out, done))
    return Trackers(made)


class Trackers:
    """Several trackers called as one (none: does nothing)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log_epoch(self, row: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_epoch(row)

    def log_image(self, path: Path, epoch: int) -> None:
        for tracker in self.trackers:
            tracker.log_image(path, epoch)

    def log_end(self, out: Path, history: list[dict]) -> None:
        for tracker in self.trackers:
            tracker.log_end(out, history)

    def close(self, failed: bool) -> None:
        for tracker in self.trackers:
            tracker.close(failed)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(failed=kind is not None)


def tensorboard_dir(cfg: RunConfig, out: Path) -> Path:
    """Where the run's event files go: ``out/tensorboard``, or ``log_dir/PARENT/NAME`` of a shared folder.

    >>> cfg = RunConfig().with_overrides({"train.log_dir": "/tb"})
    >>> tensorboard_dir(cfg, Path("/work/runs/p1")).as_posix(), tensorboard_dir(RunConfig(), Path("runs/p1")).as_posix()
    ('/tb/runs/p1', 'runs/p1/tensorboard')
    """
    if cfg.train.log_dir is None:
        return out / "tensorboard"
    path = out.resolve()
    return Path(cfg.train.log_dir) / path.parent.name / path.name


class TensorBoardTracker:
    """Scalars per epoch (the history's columns) and the run's PNGs as images, in TensorBoard event files."""

    def __init__(self, cfg: RunConfig, out: Path, done: list[dict]):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = tensorboard_dir(cfg, out)
        self.drawn: dict[Path, int] = {}  # each PNG's modification time when last logged
        # purge_step: TensorBoard hides what earlier writers logged from this epoch on (a resumed
        # run logs its last epoch again; a run started again with --overwrite logs them all)
        self.writer = SummaryWriter(str(self.folder), purge_step=int(done[-1]["epoch"]) if done else 1)
        logger.info(f"tensorboard: logging to {self.folder} (tensorboard --logdir {self.folder})")
        if done:
            self.log_epoch(done[-1])

    def log_epoch(self, row: dict[str, float]) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, global_step=int(row["epoch"]))
        self.writer.flush()

    def log_image(self, path: Path, epoch: int) -> None:
        changed = path.stat().st_mtime_ns
        if self.drawn.get(path) == changed:
            return  # the end logs every PNG; loss_curve.png may be the one the last epoch drew
        self.drawn[path] = changed
        self.writer.add_image(path.stem, _read_png(path), global_step=epoch, dataformats="HWC")
        self.writer.flush()

    def log_end(self, out: Path, history: list[dict]) -> None:
        for path in sorted(out.glob("*.png")):
            self.log_image(path, int(history[-1]["epoch"]))

    def close(self, failed: bool) -> None:
        self.writer.close()


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8


class MlflowTracker:
    """The resolved config as params, each epoch's row as metrics and the run's files as artifacts, in one MLflow run."""

    def __init__(self, cfg: RunConfig, out: Path, done: list[dict]):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.out = out
        saved = _read_mlflow_file(out)
        if saved is not None:  # --resume: the same store and run
            uri = saved["tracking_uri"]
        else:
            uri = cfg.train.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        store = uri or default_tracking_uri(out)
        if uri is None:
            try:
                (out / MLFLOW_STORE).mkdir(exist_ok=True)
            except OSError as e:
                raise OutputError(
                    f"cannot create the MLflow store in {out}: {e.strerror}; pass --tracking-uri"
                ) from None
        self.client = MlflowClient(tracking_uri=store)
        if saved is not None:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            logger.info(f"mlflow: continuing run {self.run_id} at {store}")
            logged = {metric.step for metric in self.client.get_metric_history(self.run_id, "val_loss")}
            for row in done:
                if int(row["epoch"]) not in logged:
                    self.log_epoch(row)
            return
        experiment_id = self._experiment(store)
        run = self.client.create_run(experiment_id, run_name=out.resolve().name)
        self.run_id = run.info.run_id
        # the default store is named by the run folder, so a moved folder still finds it
        write_text(out / MLFLOW_FILE, json.dumps({"run_id": self.run_id, "tracking_uri": uri}, indent=1) + "\n")
        params = [Param(key, _param_value(value)) for key, value in flatten(cfg.to_dict()).items()]
        self.client.log_batch(self.run_id, params=params)
        self.client.set_tag(self.run_id, "imgrade.run_dir", str(out.resolve()))
        logger.info(f"mlflow: logging to run {self.run_id} at {store}")
        for row in done:
            self.log_epoch(row)

    def _experiment(self, store: str) -> str:
        """$MLFLOW_EXPERIMENT_NAME, else 'imgrade'; created where missing, a SQLite store's with its
        artifacts in the folder beside the database (MLflow's default is the working directory)."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "imgrade")
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if store.startswith("sqlite:///") and store != "sqlite:///:memory:":
            location = (Path(store.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def log_epoch(self, row: dict[str, float]) -> None:
        from mlflow.entities import Metric

        step, now = int(row["epoch"]), _now_ms()
        metrics = [Metric(key, float(value), now, step) for key, value in row.items() if key != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_image(self, path: Path, epoch: int) -> None:
        pass  # sent once, at the end: an artifact store keeps files, not their versions

    def log_end(self, out: Path, history: list[dict]) -> None:
        from mlflow.entities import Metric

        best = min(history, key=lambda r: r["val_loss"])
        step, now = int(history[-1]["epoch"]), _now_ms()
        summary = {"best_val_loss": best["val_loss"], "best_val_mae": best["val_mae"], "best_epoch": best["epoch"]}
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in summary.items()])
        for path in [out / name for name in ARTIFACTS] + sorted(out.glob("*.png")):
            if not path.is_file():
                continue
            if path.stat().st_size > MAX_ARTIFACT_BYTES:
                logger.info(f"mlflow: {path.name} ({path.stat().st_size / 2**20:.0f} MB) stays in {out} only")
                continue
            self.client.log_artifact(self.run_id, str(path))

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def default_tracking_uri(out: Path) -> str:
    """The MLflow store in the run folder: a SQLite file in ``out/mlruns`` (MLflow's file store is retired)."""
    return f"sqlite:///{(out / MLFLOW_STORE).resolve() / 'mlflow.db'}"


def _read_mlflow_file(out: Path) -> dict[str, Any] | None:
    path = out / MLFLOW_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        return {"run_id": str(saved["run_id"]), "tracking_uri": saved.get("tracking_uri")}
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is corrupt: delete it to log to a new MLflow run") from None


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys.

    >>> flatten({"train": {"epochs": 2, "lr": 0.001}, "data": {"grades": ["2L", "L"]}})
    {'train.epochs': 2, 'train.lr': 0.001, 'data.grades': ['2L', 'L']}
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _now_ms() -> int:
    return int(time.time() * 1000)
