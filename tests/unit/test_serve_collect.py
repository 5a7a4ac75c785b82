"""``imgrade serve --collect DIR`` in-process: every photo graded is kept, under a quota, and no
failure to keep one ever fails the grading."""

from __future__ import annotations

import csv
import io
import logging
import re
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image
from starlette import exceptions as starlette_exceptions

with warnings.catch_warnings():
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient

from imgrade.cli import main
from imgrade.core.errors import ConfigError
from imgrade.data.images import list_images
from imgrade.runtime import load_grader
from imgrade.serve import create_app
from imgrade.serve.collect import INDEX_FILE, Collector

SERVER_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}\.(png|jpg)")


@pytest.fixture(scope="module")
def grader(trained_run):
    return load_grader(trained_run, device="cpu")


def noise_png(seed: int, side: int = 48) -> bytes:
    """A PNG that does not compress: each one about 3 * side**2 bytes, all different."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), seed % 256, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def index_rows(folder) -> list[dict[str, str]]:
    with (folder / INDEX_FILE).open(newline="") as f:
        return list(csv.DictReader(f))


def kept_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name != INDEX_FILE)


def test_every_photo_graded_is_kept_with_its_grade_under_a_name_the_server_makes(grader, tmp_path):
    pool = tmp_path / "line" / "pool"
    uploads = [
        ("../../escaped.png", noise_png(1)),  # a path in the name: never followed
        ("/etc/cron.d/x.png", noise_png(2)),
        ("C:\\photos\\=cmd,a.jpg", jpeg(3)),  # a Windows path, a formula, a comma
        ("photo.png", jpeg(4)),  # a JPEG whatever its name says
    ]
    collector = Collector(pool, quota_mb=10)
    with TestClient(create_app(grader, collector=collector)) as client:
        assert client.get("/v1/model").json()["collect"] is True
        answer = client.post("/v1/grade", files=[("files", upload) for upload in uploads])
        assert answer.status_code == 200
        collector.wait()
    results = answer.json()["results"]

    rows = index_rows(pool)
    assert (pool / INDEX_FILE).read_text().startswith("path,received,name,grade,grade_set,score\n")
    assert [row["path"] for row in rows] == kept_files(pool)  # every file has its row, and no more
    assert all(SERVER_NAME.fullmatch(row["path"]) for row in rows), rows
    by_bytes = {(pool / row["path"]).read_bytes(): row for row in rows}
    for (_, data), result in zip(uploads, results):
        row = by_bytes[data]  # the original bytes, unchanged
        assert row["grade"] == result["grade"]
        assert float(row["score"]) == pytest.approx(result["score"], rel=1e-5)
        assert row["grade_set"] == (";".join(result["grade_set"]) if result["grade_set"] is not None else "")
        assert row["path"].endswith(".png" if data.startswith(b"\x89PNG") else ".jpg")
    assert sorted(row["name"] for row in rows) == sorted(["escaped.png", "x.png", "_cmd_a.jpg", "photo.png"])
    # nothing was written outside the folder
    assert not list(tmp_path.rglob("escaped.png")) and sorted(p.name for p in tmp_path.iterdir()) == ["line"]
    # the folder lists the photos (read recursively), as the index does
    assert sorted(p.name for p in list_images(pool)) == kept_files(pool)


def test_the_oldest_photos_go_first_when_the_quota_is_reached(grader, tmp_path):
    pool = tmp_path / "pool"
    photos = [noise_png(seed) for seed in range(8)]
    quota_bytes = int(3.5 * len(photos[0]))
    collector = Collector(pool, quota_mb=quota_bytes / 1e6)
    with TestClient(create_app(grader, collector=collector)) as client:
        for k, photo in enumerate(photos):
            assert client.post("/v1/grade", files=[("files", (f"{k}.png", photo))]).status_code == 200
            collector.wait()
            rows = index_rows(pool)
            assert [row["path"] for row in rows] == kept_files(pool)
            assert sum((pool / row["path"]).stat().st_size for row in rows) + (pool / INDEX_FILE).stat().st_size <= (
                quota_bytes
            )
    kept = [(pool / row["path"]).read_bytes() for row in rows]
    assert kept == photos[-len(kept) :] and 2 <= len(kept) < len(photos)  # the newest, oldest first
    assert [row["name"] for row in rows] == [f"{k}.png" for k in range(len(photos) - len(kept), len(photos))]

    # a restarted server takes up the pool where it was
    again = Collector(pool, quota_mb=quota_bytes / 1e6)
    assert [photo.path for photo in again.photos] == [row["path"] for row in rows]
    again.close()


def test_a_photo_that_cannot_be_kept_is_still_graded_with_one_warning(grader, tmp_path, caplog):
    pool = tmp_path / "pool"
    collector = Collector(pool, quota_mb=10)
    with TestClient(create_app(grader, collector=collector)) as client:
        shutil.rmtree(pool)
        pool.write_text("the folder became a file: every write into it fails")
        caplog.set_level(logging.WARNING, logger="imgrade.serve.collect")
        answer = client.post("/v1/grade", files=[("files", ("a.png", noise_png(5)))])
        collector.wait()
    assert answer.status_code == 200 and answer.json()["results"][0]["grade"]
    warnings_seen = [r.getMessage() for r in caplog.records if r.name == "imgrade.serve.collect"]
    assert len(warnings_seen) == 1 and "\n" not in warnings_seen[0], warnings_seen
    assert warnings_seen[0].startswith(f"could not collect photo a.png into {pool} (")


def test_a_photo_over_the_whole_quota_is_not_kept_and_the_rest_are(grader, tmp_path, caplog):
    pool = tmp_path / "pool"
    small, large = jpeg(1), noise_png(2, side=64)
    collector = Collector(pool, quota_mb=(len(small) * 3) / 1e6)
    caplog.set_level(logging.WARNING, logger="imgrade.serve.collect")
    with TestClient(create_app(grader, collector=collector)) as client:
        answer = client.post("/v1/grade", files=[("files", ("large.png", large)), ("files", ("small.jpg", small))])
        collector.wait()
    assert answer.status_code == 200
    assert [row["name"] for row in index_rows(pool)] == ["small.jpg"]
    assert "large.png" in caplog.text and "over the whole --collect-quota-mb" in caplog.text


def test_without_collect_nothing_is_kept_and_the_model_card_says_so(grader):
    with TestClient(create_app(grader)) as client:
        assert client.get("/v1/model").json()["collect"] is False


def test_a_bad_collect_folder_is_refused_at_start_up_in_one_line(trained_run, tmp_path, capsys):
    a_file = tmp_path / "pool.txt"
    a_file.write_text("not a folder")
    assert main(["serve", str(trained_run), "--port", "0", "--collect", str(a_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--collect {a_file} is a file, not a folder" in err and "\n" not in err

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / INDEX_FILE).write_text("id,value\n1,2\n")
    with pytest.raises(ConfigError, match="index.csv that --collect did not write"):
        Collector(foreign)
    assert (foreign / INDEX_FILE).read_text() == "id,value\n1,2\n"  # left as it was

    with pytest.raises(ConfigError, match="positive"):
        Collector(tmp_path / "pool", quota_mb=0)
    first = Collector(tmp_path / "shared")
    try:
        with pytest.raises(ConfigError, match="in use by another imgrade serve"):
            Collector(tmp_path / "shared")
    finally:
        first.close()
