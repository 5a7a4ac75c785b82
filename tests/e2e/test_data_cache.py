"""`imgrade train --workers N --cache DIR` on folder and CSV sets: decoded once, read from the cache after."""

import dataclasses
import importlib
import json

import numpy as np
import torch

from imgrade import pipeline
from imgrade.cli import main
from imgrade.config import RunConfig
from imgrade.data.loader import load_dataset
from imgrade.training.loop import fit


def test_second_training_run_reads_decoded_photos_from_the_cache(tmp_path, capsys):
    data = tmp_path / "folders"
    assert main(["data", "synth", "--out", str(data), "--n", "150", "--format", "folders", "--seed", "2"]) == 0
    common = [
        "--data",
        str(data),
        "--epochs",
        "1",
        "--depth",
        "11",
        "--workers",
        "2",
        "--cache",
        str(tmp_path / "cache"),
    ]
    capsys.readouterr()
    assert main(["train", *common, "--out", str(tmp_path / "a")]) == 0
    assert "decoded 150 images with 2 workers" in capsys.readouterr().err
    assert main(["train", *common, "--out", str(tmp_path / "b")]) == 0
    assert "150 decoded images from the cache" in capsys.readouterr().err
    same = (tmp_path / "a" / "history.csv").read_text().splitlines()[1].split(",")[:3]
    assert (tmp_path / "b" / "history.csv").read_text().splitlines()[1].split(",")[:3] == same


def test_cache_off_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMGRADE_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "folders"
    assert main(["data", "synth", "--out", str(data), "--n", "40", "--format", "folders"]) == 0
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--epochs",
                "1",
                "--depth",
                "11",
                "--cache",
                "off",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "decoded" not in err and "from the cache" not in err
    assert not (tmp_path / "cache").exists()


def test_a_csv_set_trains_from_the_cache_and_evaluates(tmp_path, capsys):
    data = tmp_path / "folders"
    assert main(["data", "synth", "--out", str(data), "--n", "150", "--format", "folders", "--seed", "3"]) == 0
    manifest = data / "attributes.csv"  # path,target,...: a CSV manifest of the same photos
    common = [
        "--data",
        str(manifest),
        "--epochs",
        "1",
        "--depth",
        "11",
        "--workers",
        "2",
        "--cache",
        str(tmp_path / "cache"),
    ]
    capsys.readouterr()
    assert main(["train", *common, "--out", str(tmp_path / "a")]) == 0
    assert "decoded 150 images with 2 workers" in capsys.readouterr().err
    assert main(["train", *common, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "150 decoded images from the cache" in err and "grade sets:" in err
    assert (tmp_path / "b" / "history.csv").read_text().splitlines()[1].split(",")[:4] == (
        (tmp_path / "a" / "history.csv").read_text().splitlines()[1].split(",")[:4]
    )
    assert main(["evaluate", str(tmp_path / "b")]) == 0
    metrics = json.loads((tmp_path / "b" / "eval-test" / "metrics.json").read_text())
    assert metrics["n"] == len(json.loads((tmp_path / "b" / "split.json").read_text())["test"])


def test_training_reads_a_memory_mapped_set_in_place_and_learns_what_a_copy_in_memory_does(tmp_path, monkeypatch):
    data = tmp_path / "folders"
    assert main(["data", "synth", "--out", str(data), "--n", "80", "--format", "folders", "--seed", "4"]) == 0
    cfg = RunConfig().with_overrides(
        {
            "data.path": str(data),
            "data.cache": str(tmp_path / "cache"),
            "train.epochs": 1,
            "model.depth": 11,
            "train.seed": 0,
        }
    )
    mapped = load_dataset(cfg.data)
    assert isinstance(mapped.images, np.memmap)
    in_memory = dataclasses.replace(mapped, images=np.array(mapped.images))
    seen = []

    def spy(model, data, *args, **kwargs):
        seen.append(data)
        return fit(model, data, *args, **kwargs)

    monkeypatch.setattr(importlib.import_module("imgrade.pipeline.trainer"), "fit", spy)
    pipeline.train(cfg, tmp_path / "mapped", imageset=mapped)
    pipeline.train(cfg, tmp_path / "in-memory", imageset=in_memory)
    for data, imageset in zip(seen, (mapped, in_memory)):
        # one tensor for both splits, over the set's own pages: nothing was copied
        assert data.train_x is data.val_x and data.train_x.data_ptr() == imageset.images.ctypes.data
    a, b = (torch.load(tmp_path / run / "best.pt", weights_only=True) for run in ("mapped", "in-memory"))
    assert torch.equal(a["mean_image"], b["mean_image"])
    assert a["val_loss"] == b["val_loss"] and a["calibrations"] == b["calibrations"] and a["calibrations"]
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
