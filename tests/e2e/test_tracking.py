"""`imgrade train --log-to tensorboard,mlflow`: the event files and the MLflow run, read back as a user would."""

import csv
import importlib
import io
import json
import sys

import pytest
from PIL import Image

from imgrade.cli import main

TRAINING = importlib.import_module("imgrade.pipeline.trainer")  # the module; `pipeline.train` is the function

pytest.importorskip("tensorboard", reason="pip install 'imgrade[tensorboard]'")
pytest.importorskip("mlflow", reason="pip install 'imgrade[mlflow]'")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SCALARS = ("train_loss", "val_loss", "val_mae", "lr", "seconds")


@pytest.fixture(autouse=True)
def no_mlflow_environment(monkeypatch):
    """The run's own store, whatever the machine running the tests has set."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


def _train(synth_dir, out, *flags):
    return main(["train", "--data", str(synth_dir), "--depth", "11", "--out", str(out), *flags])


def _history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def _events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _mlflow_run(run):
    """The client of the run's own store, and the run its mlflow.json names."""
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlruns' / 'mlflow.db'}")
    return client, client.get_run(json.loads((run / "mlflow.json").read_text())["run_id"])


def test_tensorboard_event_files_hold_each_epoch_and_the_plots(synth_dir, tmp_path):
    run = tmp_path / "runs" / "tb"
    assert _train(synth_dir, run, "--epochs", "2", "--log-to", "tensorboard") == 0
    events = _events(run / "tensorboard")
    assert set(SCALARS) <= set(events.Tags()["scalars"])
    history = _history(run)
    for key in SCALARS:
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2], key
        assert [e.value for e in logged] == pytest.approx([float(r[key]) for r in history], rel=1e-6), key
    assert events.Scalars("lr")[0].value == pytest.approx(1e-3)
    curves = events.Images("loss_curve")
    assert curves and curves[-1].step == 2
    with Image.open(io.BytesIO(curves[-1].encoded_image_string)) as image:
        assert image.format == "PNG" and image.size[0] > 200
    assert not (run / "mlflow.json").exists() and not (run / "mlruns").exists()
    assert "log_to: tensorboard" in (run / "config.yaml").read_text()


def test_mlflow_run_holds_params_metrics_artifacts_and_resume_continues_it(synth_dir, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "ml"
    real_write = TRAINING.write_history

    def interrupt_after_two_epochs(path, history):
        real_write(path, history)
        if len(history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(TRAINING, "write_history", interrupt_after_two_epochs)
    assert _train(synth_dir, run, "--epochs", "3", "--log-to", "mlflow,tensorboard") == 130
    monkeypatch.setattr(TRAINING, "write_history", real_write)
    client, stopped = _mlflow_run(run)
    assert stopped.info.status == "FAILED"
    # stopped after last.pt held epoch 2 but before the trackers saw it: --resume logs it
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "val_loss")] == [1]

    assert _train(synth_dir, run, "--resume") == 0
    client, finished = _mlflow_run(run)
    run_id = finished.info.run_id
    assert run_id == stopped.info.run_id and finished.info.status == "FINISHED"
    assert finished.info.run_name == "ml"
    params = finished.data.params
    assert params["train.epochs"] == "3" and params["model.depth"] == "11" and params["data.path"] == str(synth_dir)
    assert params["train.log_to"] == "tensorboard,mlflow"
    history = _history(run)
    for key in SCALARS:
        logged = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in logged] == [1, 2, 3], key
        assert [m.value for m in logged] == pytest.approx([float(r[key]) for r in history]), key
    best = min(history, key=lambda r: float(r["val_loss"]))
    assert finished.data.metrics["best_epoch"] == int(best["epoch"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "history.csv", "loss_curve.png", "best.pt", "split.json"} <= artifacts
    saved = client.download_artifacts(run_id, "history.csv", str(tmp_path))
    assert _history(tmp_path) == history and saved.endswith("history.csv")
    # TensorBoard: the same folder, each epoch once
    events = _events(run / "tensorboard")
    assert [e.step for e in events.Scalars("val_loss")] == [1, 2, 3]


def test_tracking_uri_and_log_dir_put_the_logs_outside_the_run(synth_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "cucumbers")
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    run = tmp_path / "runs" / "shared"
    flags = ["--epochs", "1", "--log-to", "tensorboard,mlflow", "--log-dir", str(tmp_path / "tb")]
    assert _train(synth_dir, run, *flags, "--tracking-uri", f"sqlite:///{store}") == 0
    assert not (run / "mlruns").exists() and not (run / "tensorboard").exists()
    assert [e.step for e in _events(tmp_path / "tb" / "runs" / "shared").Scalars("val_loss")] == [1]
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("cucumbers")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == json.loads((run / "mlflow.json").read_text())["run_id"]
    assert "history.csv" in {a.path for a in client.list_artifacts(found.info.run_id)}
    assert (store.parent / "artifacts").is_dir()  # beside the database, not in the working directory


@pytest.mark.parametrize("extra", ["tensorboard", "mlflow"])
def test_a_missing_extra_is_one_line_before_training(extra, synth_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, extra, None)  # `import extra` now fails as if it were not installed
    run = tmp_path / "run"
    assert _train(synth_dir, run, "--epochs", "1", "--log-to", extra) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"imgrade: error: --log-to {extra} needs the {extra} package: pip install 'imgrade[{extra}]'"
    assert not (run / "config.yaml").exists() and not (run / "history.csv").exists()


def test_an_unknown_tracker_names_the_flag(synth_dir, tmp_path, capsys):
    assert _train(synth_dir, tmp_path / "run", "--log-to", "tensorboard,wandb") == 2
    err = capsys.readouterr().err
    assert "'wandb'" in err and "--log-to" in err and len(err.strip().splitlines()) == 1
