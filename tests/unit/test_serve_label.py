"""``imgrade serve --label TO_LABEL.csv`` in-process: the /v1/label routes, the rows they add to
LABELS.csv, and everything a client may send them wrong."""

from __future__ import annotations

import csv
import threading
import warnings
from pathlib import Path

import pytest
from PIL import Image
from starlette import exceptions as starlette_exceptions

with warnings.catch_warnings():
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient

from imgrade.cli import main
from imgrade.core.errors import ConfigError
from imgrade.data.synthetic import generate_cucumbers
from imgrade.runtime import load_grader
from imgrade.serve import create_app
from imgrade.serve.labelling import LabelledAlready, LabelQueue

N_PHOTOS = 6


@pytest.fixture(scope="module")
def grader(trained_run):
    return load_grader(trained_run, device="cpu")


@pytest.fixture
def to_label(tmp_path) -> Path:
    """A TO_LABEL.csv as ``imgrade suggest`` writes it (path,target with the target empty, and more
    columns), listing N_PHOTOS generated photos in pool/ beside it."""
    pool = tmp_path / "pool"
    pool.mkdir()
    rows = ["path,target,suggested,score"]
    for k, image in enumerate(generate_cucumbers(N_PHOTOS, seed=3).imageset.images):
        Image.fromarray(image).save(pool / f"photo{k}.png")
        rows.append(f"pool/photo{k}.png,,M,{k}.5")
    (tmp_path / "to_label.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "secret.png").write_bytes((pool / "photo0.png").read_bytes())  # never listed: never served
    return tmp_path / "to_label.csv"


def labels_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def post_label(client, index, grade, **kwargs):
    return client.post("/v1/label", json={"index": index, "grade": grade}, **kwargs)


def test_labelling_photos_one_at_a_time(grader, to_label):
    queue = LabelQueue(to_label, None, grader.grade_names)
    labels = to_label.parent / "labels.csv"
    grades_txt = to_label.parent / "grades.txt"
    assert grades_txt.read_text().split() == grader.grade_names  # written for train --data labels.csv
    with TestClient(create_app(grader, labels=queue)) as client:
        assert client.get("/v1/model").json()["label"] is True
        state = client.get("/v1/label").json()
        assert state["total"] == N_PHOTOS and state["labelled"] == 0 and state["last"] is None
        assert state["next"] == {"index": 0, "path": "pool/photo0.png", "suggested": "M"}
        assert state["grades"] == grader.grade_names

        photo = client.get("/v1/label/photos/2")
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
        assert photo.content == (to_label.parent / "pool" / "photo2.png").read_bytes()
        hint = client.get("/v1/label/photos/2/grade").json()
        assert hint["image"] == "pool/photo2.png" and hint["grade"] in grader.grade_names

        first, second = grader.grade_names[0], grader.grade_names[3]
        state = post_label(client, 0, first).json()
        assert state["labelled"] == 1 and state["next"]["index"] == 1
        assert state["last"] == {"path": "pool/photo0.png", "grade": first}
        state = post_label(client, 1, second).json()
        assert labels_rows(labels) == [["path", "target"], ["pool/photo0.png", first], ["pool/photo1.png", second]]

        # skipping: the next photo without a label from a number on, then from the top
        assert client.get("/v1/label?start=4").json()["next"]["index"] == 4
        assert client.get("/v1/label?start=0").json()["next"]["index"] == 2

        undone = client.post("/v1/label/undo", json={}).json()
        assert undone["labelled"] == 1 and undone["next"]["index"] == 1
        assert labels_rows(labels) == [["path", "target"], ["pool/photo0.png", first]]
        assert not [p for p in labels.parent.iterdir() if p.name.endswith(".tmp")]


def test_bad_requests_get_one_line_4xx_answers_and_change_nothing(grader, to_label):
    queue = LabelQueue(to_label, None, grader.grade_names)
    labels = to_label.parent / "labels.csv"
    grade = grader.grade_names[0]
    with TestClient(create_app(grader, labels=queue)) as client:
        answers = {
            "index past the end": (client.get(f"/v1/label/photos/{N_PHOTOS}"), 404),
            "negative index": (client.get("/v1/label/photos/-1"), 404),
            "index not a number": (client.get("/v1/label/photos/1e3"), 404),
            "huge index": (client.get("/v1/label/photos/" + "9" * 40), 404),
            "a path": (client.get("/v1/label/photos/..%2Fsecret.png"), 404),
            "a path, encoded twice": (client.get("/v1/label/photos/%252e%252e%252fsecret.png"), 404),
            "a dotted path": (client.get("/v1/label/photos/../../secret.png"), 404),
            "hint past the end": (client.get(f"/v1/label/photos/{N_PHOTOS}/grade"), 404),
            "start not a number": (client.get("/v1/label?start=x"), 400),
            "grade not the model's": (post_label(client, 0, "XL"), 400),
            "grade empty": (post_label(client, 0, ""), 400),
            "index past the end, labelling": (post_label(client, N_PHOTOS, grade), 404),
            "index a string": (post_label(client, "0", grade), 400),
            "index true": (post_label(client, True, grade), 400),
            "index a float": (post_label(client, 0.5, grade), 400),
            "not JSON": (
                client.post("/v1/label", content=b"{index", headers={"Content-Type": "application/json"}),
                400,
            ),
            "a JSON list": (client.post("/v1/label", json=[0, grade]), 400),
            "a form": (client.post("/v1/label", data={"index": "0", "grade": grade}), 415),
            "text/plain (a cross-site form)": (
                client.post("/v1/label", content=b'{"index": 0, "grade": "M"}', headers={"Content-Type": "text/plain"}),
                415,
            ),
            "nothing to undo": (client.post("/v1/label/undo", json={}), 400),
        }
        for what, (answer, status) in answers.items():
            assert answer.status_code == status, f"{what}: {answer.status_code} {answer.text}"
            error = answer.json()["error"]
            assert error and "\n" not in error, what
        assert not labels.exists()

        assert post_label(client, 0, grade).status_code == 200
        again = post_label(client, 0, grader.grade_names[1])
        assert again.status_code == 409 and "labelled already" in again.json()["error"]
        assert labels_rows(labels) == [["path", "target"], ["pool/photo0.png", grade]]


def test_the_label_routes_need_the_token(grader, to_label):
    queue = LabelQueue(to_label, None, grader.grade_names)
    with TestClient(create_app(grader, token="s3cret", labels=queue)) as client:
        for answer in (
            client.get("/v1/label"),
            client.get("/v1/label/photos/0"),
            client.get("/v1/label/photos/0/grade"),
            post_label(client, 0, grader.grade_names[0]),
            client.post("/v1/label/undo", json={}),
        ):
            assert answer.status_code == 401 and answer.json()["error"]
        assert not (to_label.parent / "labels.csv").exists()
        good = {"Authorization": "Bearer s3cret"}
        assert client.get("/v1/label/photos/0", headers=good).status_code == 200
        assert post_label(client, 0, grader.grade_names[0], headers=good).status_code == 200


def test_without_label_the_routes_do_not_exist(grader, to_label):
    with TestClient(create_app(grader)) as client:
        assert client.get("/v1/model").json()["label"] is False
        assert client.get("/v1/label").status_code == 404
        assert client.get("/v1/label/photos/0").status_code == 404
        assert not any(path.startswith("/v1/label") for path in client.get("/openapi.json").json()["paths"])
    with TestClient(create_app(grader, labels=LabelQueue(to_label, None, grader.grade_names))) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/label", "/v1/label/photos/{index}", "/v1/label/photos/{index}/grade", "/v1/label/undo"} <= set(paths)
    assert {"400", "401", "404", "409", "415"} <= set(paths["/v1/label"]["post"]["responses"])


def test_concurrent_clicks_never_lose_a_row_nor_label_a_photo_twice(grader, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    image = generate_cucumbers(1, seed=0).imageset.images[0]
    count = 24
    for k in range(count):
        Image.fromarray(image).save(pool / f"{k}.png")
    to_label = tmp_path / "to_label.csv"
    to_label.write_text("path\n" + "".join(f"pool/{k}.png\n" for k in range(count)))
    labels = tmp_path / "out" / "labels.csv"  # elsewhere: its paths are relative to its own folder
    queue = LabelQueue(to_label, labels, grader.grade_names)
    start = threading.Barrier(count + 2)
    refused = []

    def click(index: int) -> None:
        start.wait()
        try:
            queue.add(index, grader.grade_names[index % len(grader.grade_names)])
        except LabelledAlready:
            refused.append(index)

    threads = [threading.Thread(target=click, args=(k,)) for k in range(count)]
    threads += [threading.Thread(target=click, args=(0,)), threading.Thread(target=click, args=(5,))]  # double clicks
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = labels_rows(labels)
    assert rows[0] == ["path", "target"]
    assert sorted(rows[1:]) == sorted(
        [f"../pool/{k}.png", grader.grade_names[k % len(grader.grade_names)]] for k in range(count)
    )
    assert sorted(refused) == [0, 5]
    assert queue.state()["labelled"] == count and queue.state()["next"] is None


def test_a_label_keeps_rows_added_to_the_file_meanwhile(grader, to_label):
    labels = to_label.parent / "labels.csv"
    labels.write_text("path,target\npool/photo3.png,M\n")  # labelled before the server started
    queue = LabelQueue(to_label, None, grader.grade_names)
    assert queue.state()["labelled"] == 1
    with labels.open("a") as f:
        f.write("./pool/photo1.png,S\n")  # added by hand while serving, spelled differently
    queue.add(0, "L")
    assert labels_rows(labels)[1:] == [["pool/photo3.png", "M"], ["./pool/photo1.png", "S"], ["pool/photo0.png", "L"]]
    state = queue.state()
    assert state["labelled"] == 3 and state["next"]["index"] == 2


def test_labels_for_another_model_or_a_bad_manifest_are_refused_at_start_up(grader, trained_run, to_label, capsys):
    (to_label.parent / "grades.txt").write_text("good\nbad\n")
    with pytest.raises(ConfigError, match="names the grades good, bad but the model grades"):
        LabelQueue(to_label, None, grader.grade_names)
    assert main(["serve", str(trained_run), "--port", "0", "--label", str(to_label)]) == 2
    err = capsys.readouterr().err.strip()
    assert "grades.txt names the grades good, bad" in err and "\n" not in err
    assert main(["serve", str(trained_run), "--port", "0", "--labels", str(to_label.parent / "l.csv")]) == 2
    assert "add --label" in capsys.readouterr().err

    no_path = to_label.parent / "no_path.csv"
    no_path.write_text("file,target\na.png,\n")
    with pytest.raises(ConfigError, match="no column path"):
        LabelQueue(no_path, None, grader.grade_names)
    with pytest.raises(ConfigError, match="does not exist"):
        LabelQueue(to_label.parent / "missing.csv", None, grader.grade_names)
    with pytest.raises(ConfigError, match="continuous target"):
        LabelQueue(to_label, None, None)
