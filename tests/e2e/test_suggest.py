"""`imgrade suggest`: which unlabelled photos to label next, written as a manifest to fill in."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgrade
from imgrade.cli import main
from imgrade.config import DataConfig
from imgrade.data.loader import load_dataset
from imgrade.data.synthetic import generate_cucumbers

HEADER = ["path", "target", "suggested", "grade_set", "uncertainty", "rank"]
NEW, KNOWN = 16, 4


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, synth_dir) -> Path:
    """pool/: 16 new synthetic cucumbers and 4 photos of the labelled set ``synth_dir``, as PNG files."""
    root = tmp_path_factory.mktemp("suggest")
    pool = root / "pool"
    (pool / "day1").mkdir(parents=True)
    for i, image in enumerate(generate_cucumbers(NEW, image_size=32, seed=7).imageset.images):
        Image.fromarray(image).save(pool / "day1" / f"new{i}.png")
    labelled = load_dataset(DataConfig(path=str(synth_dir))).images
    for i in range(KNOWN):
        Image.fromarray(np.asarray(labelled[i])).save(pool / f"known{i}.png")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_suggest_writes_a_manifest_to_fill_in(coral_run, synth_dir, workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    argv = ["suggest", str(coral_run), "pool", "--n", "5", "--labelled", str(synth_dir)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"ranked {NEW} photos ({KNOWN} already labelled left out) by expected grade error" in err
    assert "spread over pooled features" in err and "mean uncertainty" in err
    out = workspace / "to-label.csv"
    assert out.read_text().splitlines()[0] == ",".join(HEADER)
    rows = _rows(out)
    assert [row["rank"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert all(row["path"].startswith("pool/day1/new") and row["target"] == "" for row in rows)
    assert len({row["path"] for row in rows}) == 5
    grades = load_dataset(DataConfig(path=str(synth_dir))).grade_names
    assert all(row["suggested"] in grades for row in rows)
    assert all(set(row["grade_set"].split("|")) <= set(grades) for row in rows)  # coral_run is calibrated
    assert all(float(row["uncertainty"]) >= 0 for row in rows)

    # again: refused, the file kept; --overwrite replaces it
    before = out.read_text()
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "imgrade: error: to-label.csv already exists: pass --overwrite to replace it, or --out another file"
    )
    assert out.read_text() == before
    assert main([*argv, "--overwrite", "--diversity", "0"]) == 0

    # the target filled in, train --data reads it as a manifest
    rows = _rows(out)
    for row in rows:
        row["target"] = row["suggested"]
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    manifest = load_dataset(DataConfig(path=str(out), grades=grades))
    assert len(manifest) == 5 and [grades[int(t)] for t in manifest.targets] == [r["suggested"] for r in rows]


def test_python_api_with_an_onnx_file_and_paths_outside_the_folder(trained_onnx, workspace, tmp_path):
    result = imgrade.suggest(trained_onnx, workspace / "pool", n=3, out=tmp_path / "next.csv")
    assert result.pool == NEW + KNOWN and result.dropped == 0 and len(result.rows) == 3
    assert result.measure == "cut-point closeness" and result.embedding == "score + 8x8 thumbnail"
    assert result.mean_chosen >= result.mean_pool
    rows = _rows(tmp_path / "next.csv")
    assert [row["path"] for row in rows] == [r.path for r in result.rows]
    assert all(Path(row["path"]).is_absolute() and Path(row["path"]).is_file() for row in rows)


def test_more_than_the_pool_suggests_it_all(trained_run, workspace, tmp_path, caplog):
    result = imgrade.suggest(trained_run, workspace / "pool", n=100, out=tmp_path / "all.csv")
    assert len(result.rows) == NEW + KNOWN and result.embedding == "pooled features"
    assert f"--n 100 is more than the {NEW + KNOWN} photos to rank: suggesting them all" in caplog.text
    assert sorted(r.rank for r in result.rows) == list(range(1, NEW + KNOWN + 1))


def _one_line_error(argv, capsys, expected: str) -> None:
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("imgrade: error: ")]
    assert len(errors) == 1 and expected in errors[0], errors


def test_bad_input_is_refused_with_one_line(trained_onnx, workspace, tmp_path, capsys):
    pool, out = str(workspace / "pool"), str(tmp_path / "x.csv")
    _one_line_error(["suggest", str(trained_onnx), pool, "--n", "0", "--out", out], capsys, "--n 0 asks for no photos")
    _one_line_error(["suggest", str(tmp_path / "no-run"), pool, "--n", "3", "--out", out], capsys, "no-run")
    (tmp_path / "empty").mkdir()
    _one_line_error(["suggest", str(trained_onnx), str(tmp_path / "empty"), "--n", "3", "--out", out], capsys, "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(bad / "fine.png")
    (bad / "broken.png").write_text("not a photo")
    _one_line_error(["suggest", str(trained_onnx), str(bad), "--n", "1", "--out", out], capsys, "broken.png")
    _one_line_error(
        ["suggest", str(trained_onnx), pool, "--n", "1", "--diversity", "2", "--out", out], capsys, "outside 0..1"
    )
    assert not Path(out).exists()


def test_a_continuous_target_is_refused(tmp_path, capsys):
    images = generate_cucumbers(12, image_size=32, seed=3).imageset.images
    lines = ["path,target"]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"c{i}.png")
        lines.append(f"c{i}.png,{1.5 + 0.25 * i}")
    (tmp_path / "set.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert (
        main(["train", "--data", str(tmp_path / "set.csv"), "--epochs", "1", "--depth", "11", "--out", str(run)]) == 0
    )
    capsys.readouterr()
    _one_line_error(
        ["suggest", str(run), str(tmp_path / "set.csv"), "--n", "2", "--out", str(tmp_path / "x.csv")],
        capsys,
        "predicts a continuous target",
    )
