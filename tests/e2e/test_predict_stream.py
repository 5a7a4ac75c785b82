"""`imgrade predict` on folders with bad photos: error rows, exit status, --out files, streaming."""

import csv
import io
import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from imgrade import pipeline
from imgrade.cli import main
from imgrade.core.errors import CheckpointError
from imgrade.data import prefetch
from imgrade.data.prefetch import THREAD_NAME
from imgrade.data.synthetic import generate_cucumbers
from imgrade.runtime.torch_engine import TorchEngine

GOOD = 6
BAD = {"truncated.jpg": "is truncated or corrupt", "notes.png": "is not an image Pillow can read"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """6 synthetic cucumbers (48x48 PNG), a JPEG cut in half and a text file named .png."""
    folder = tmp_path_factory.mktemp("predict") / "photos"
    folder.mkdir()
    images = generate_cucumbers(GOOD + 1, image_size=48, seed=5).imageset.images
    for i, image in enumerate(images[:GOOD]):
        Image.fromarray(image).save(folder / f"c{i}.png")
    buffer = io.BytesIO()
    Image.fromarray(images[GOOD]).save(buffer, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "notes.png").write_text("a note, not a photo\n")
    return folder


def _good(photos: Path) -> list[str]:
    return [str(photos / f"c{i}.png") for i in range(GOOD)]


def _stdout_rows(argv, capsys, status: int) -> list[dict[str, str]]:
    assert main(argv) == status
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def _as_text(value) -> str:
    """A value read from JSON lines or Parquet as the csv module writes it."""
    return "" if value is None else str(value)


def test_bad_photos_get_error_rows_the_rest_is_graded_and_the_status_is_1(coral_run, photos, capsys):
    assert main(["predict", str(coral_run), str(photos)]) == 1
    captured = capsys.readouterr()
    assert captured.err == "imgrade: 2 of 8 photos could not be graded: see the error column on stdout\n"
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    # every photo once, in the folder's natural order; the bad ones in place
    assert [Path(row["image"]).name for row in rows] == ["c0.png", "c1.png", "c2.png", "c3.png", "c4.png"] + [
        "c5.png",
        "notes.png",
        "truncated.jpg",
    ]
    grades = TorchEngine.from_run(coral_run, device="cpu").grade_names
    for row in rows:
        name = Path(row["image"]).name
        if name in BAD:
            assert BAD[name] in row["error"] and name in row["error"] and "\n" not in row["error"]
            assert {k: v for k, v in row.items() if k not in ("image", "error")} == dict.fromkeys(
                [k for k in row if k not in ("image", "error")], ""
            )
        else:
            assert row["error"] == "" and row["grade"] in grades and set(row["grade_set"].split("|")) <= set(grades)
            assert sum(float(row[f"p_{g}"]) for g in grades) == pytest.approx(1, abs=1e-3)


def test_every_photo_graded_is_status_0_and_silent(coral_run, photos, capsys):
    rows = _stdout_rows(["predict", str(coral_run), *_good(photos)], capsys, 0)
    assert len(rows) == GOOD and all(row["error"] == "" for row in rows)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--frmat", "json"], "unrecognized arguments: --frmat json: did you mean '--format'?"),
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--format", "json", "--out", "{tmp}/g.csv"], "--format picks what goes to stdout"),
        (["--out", "{tmp}/grades.json"], "name it grades.csv, grades.jsonl"),
        (["--workers", "2"], "--engine ray"),
        (["--decode-threads", "-1"], "--decode-threads -1 is negative: use 0"),
        (["--decode-threads", "2", "--engine", "ray"], "--decode-threads is for --engine local"),
    ],
)
def test_a_bad_flag_is_status_2_and_grades_nothing(coral_run, photos, tmp_path, flags, says, capsys):
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    assert main(["predict", str(coral_run), str(photos), *flags]) == 2
    captured = capsys.readouterr()
    assert says in captured.err.splitlines()[0] and captured.out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_out_holds_the_rows_stdout_shows(coral_run, photos, tmp_path, suffix, capsys):
    expected = _stdout_rows(["predict", str(coral_run), str(photos)], capsys, 1)
    out = tmp_path / f"grades{suffix}"
    assert main(["predict", str(coral_run), str(photos), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"imgrade: 2 of 8 photos could not be graded: see the error column of {out}\n"
    )
    if suffix == ".csv":
        with out.open(newline="") as file:
            rows = list(csv.DictReader(file))
    elif suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
        rows = [{k: _as_text(v) for k, v in record.items()} for record in records]
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        table = pq.read_table(out)
        assert {str(table.schema.field(name).type) for name in ("score", "p_L")} == {"double"}
        rows = [{k: _as_text(v) for k, v in record.items()} for record in table.to_pylist()]
    assert rows == expected  # the same columns, in the same order, with the same text
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left beside it


def test_out_in_a_folder_that_does_not_exist_is_one_line_and_status_2(coral_run, photos, tmp_path, capsys):
    out = tmp_path / "no-such-folder" / "grades.csv"
    assert main(["predict", str(coral_run), str(photos), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no-such-folder does not exist" in err
    assert not out.parent.exists()


@pytest.mark.parametrize("decode_threads", ["0", "2"])
@pytest.mark.parametrize("stop, status", [(CheckpointError("the model failed"), 2), (KeyboardInterrupt(), 130)])
def test_a_job_stopped_midway_leaves_the_old_file_as_it_was(
    coral_run, photos, tmp_path, monkeypatch, stop, status, decode_threads
):
    out = tmp_path / "grades.csv"
    out.write_text("yesterday's grades\n")
    outputs, calls = TorchEngine.outputs, []

    def fail_on_the_second_batch(self, images, batch_size=None):
        calls.append(len(images))
        if len(calls) == 2:
            raise stop
        return outputs(self, images, batch_size)

    monkeypatch.setattr("imgrade.pipeline.predictor.CHUNK", 3)
    monkeypatch.setattr(TorchEngine, "outputs", fail_on_the_second_batch)
    argv = ["predict", str(coral_run), str(photos), "--out", str(out), "--decode-threads", decode_threads]
    assert main(argv) == status
    assert calls == [3, 3] and out.read_text() == "yesterday's grades\n"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    assert _decoder_threads() == []


def _decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def test_decoder_threads_give_the_rows_of_decoding_in_the_grading_thread(coral_run, photos, monkeypatch):
    monkeypatch.setattr("imgrade.pipeline.predictor.CHUNK", 3)  # 3 batches: 3 good, 3 good, 2 bad
    texts, results = [], []
    for decode_threads in (0, 1, 3):
        stream = io.StringIO()
        results.append(pipeline.predict(coral_run, [str(photos)], stream=stream, decode_threads=decode_threads))
        texts.append(stream.getvalue())
    assert texts[1] == texts[0] and texts[2] == texts[0]
    assert results[1] == results[0] and results[2] == results[0]
    assert len(texts[0].splitlines()) == 1 + GOOD + len(BAD)


def test_a_writer_that_fails_stops_the_decoder_threads(coral_run, photos, monkeypatch):
    class FullDisk(io.StringIO):
        def write(self, text):
            if self.tell() > 0:  # the header went through; the first batch's rows do not
                raise OSError(28, "No space left on device")
            return super().write(text)

    monkeypatch.setattr("imgrade.pipeline.predictor.CHUNK", 2)
    with pytest.raises(OSError, match="No space left"):
        pipeline.predict(coral_run, [str(photos)], stream=FullDisk(), decode_threads=2)
    assert _decoder_threads() == []


def _watch_decoding(monkeypatch, stream: io.StringIO) -> list[int]:
    """Lines on ``stream`` as each photo starts decoding, in the order the photos are listed."""
    load_image, lines_seen = prefetch.load_image, {}

    def watch(path, size, check=None):
        lines_seen[path] = len(stream.getvalue().splitlines())
        return load_image(path, size, check=check)

    monkeypatch.setattr(prefetch, "load_image", watch)
    return lines_seen


def test_rows_are_written_as_each_batch_is_graded(coral_run, photos, monkeypatch):
    """Decoding in the grading thread: the rows of one batch are on the stream before the next
    batch's first photo is read."""
    stream = io.StringIO()
    monkeypatch.setattr("imgrade.pipeline.predictor.CHUNK", 3)
    lines_seen = _watch_decoding(monkeypatch, stream)
    pipeline.predict(coral_run, [str(photos)], stream=stream, decode_threads=0)
    # the header comes first; each batch of 3 adds its rows before the next batch is decoded
    assert list(lines_seen.values()) == [1, 1, 1, 4, 4, 4, 7, 7]
    assert len(stream.getvalue().splitlines()) == 1 + 8


def test_decoder_threads_stay_at_most_two_batches_ahead_of_the_rows(coral_run, photos, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("imgrade.pipeline.predictor.CHUNK", 2)  # 4 batches
    lines_seen = _watch_decoding(monkeypatch, stream)
    pipeline.predict(coral_run, [str(photos)], stream=stream, decode_threads=2)
    assert sorted(lines_seen) == sorted(str(p) for p in photos.iterdir())
    # the last batch is decoded only once the first batch's rows (after the header) are written
    last = [n for path, n in lines_seen.items() if Path(path).name in ("notes.png", "truncated.jpg")]
    assert prefetch.AHEAD == 2 and min(last) >= 1 + 2
    assert len(stream.getvalue().splitlines()) == 1 + 8


def test_json_on_stdout_is_one_list_of_records(coral_run, photos, capsys):
    assert main(["predict", str(coral_run), str(photos), "--format", "json"]) == 1
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert "see the error field of their records on stdout" in captured.err
    by_name = {Path(r["image"]).name: r for r in records}
    assert len(records) == 8
    graded = by_name["c0.png"]  # what POST /v1/grade answers for the photo, as it is
    assert list(graded) == ["image", "score", "grade", "grade_index", "grade_set", "probabilities"]
    failed = by_name["notes.png"]
    assert BAD["notes.png"] in failed["error"]
    assert failed == {**dict.fromkeys(graded), "image": failed["image"], "error": failed["error"]}


def test_the_python_api_returns_the_grades_and_the_failures(coral_run, photos):
    stream = io.StringIO()
    result = pipeline.predict(coral_run, [str(photos)], stream=stream)
    assert (result.photos, result.graded, result.failed, result.out) == (8, GOOD, 2, None)
    assert [grade.source for grade in result.grades] == _good(photos)
    assert [Path(f.image).name for f in result.failures] == ["notes.png", "truncated.jpg"]
    assert BAD["truncated.jpg"] in result.failures[1].error
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [float(row["score"]) for row in rows if not row["error"]] == [
        round(grade.score, 4) for grade in result.grades
    ]
    lean = pipeline.predict(coral_run, [str(photos)], stream=io.StringIO(), keep_grades=False)
    assert (lean.grades, lean.graded, lean.failures) == ([], GOOD, result.failures)
