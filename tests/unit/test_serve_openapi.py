"""/openapi.json describes every answer of the service: real answers of each route, errors included,
validate against the schemas it publishes, with no key the schema does not name."""

from __future__ import annotations

import copy
import io
import warnings

import jsonschema
import pytest
from PIL import Image
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from imgrade.runtime import load_grader
from imgrade.runtime.grading import Grade
from imgrade.serve import Limits, create_app


@pytest.fixture(scope="module")
def grader(coral_run):
    return load_grader(coral_run, device="cpu")


@pytest.fixture(scope="module")
def openapi(grader) -> dict:
    with TestClient(create_app(grader)) as client:
        return client.get("/openapi.json").json()


def png(color=(90, 140, 60), size=(40, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def strict(openapi: dict) -> dict:
    """The components with ``additionalProperties: false`` on every object of named properties, so
    that an answer with a key the schema leaves out fails too (maps such as probabilities keep theirs)."""
    components = copy.deepcopy(openapi["components"])
    for schema in components["schemas"].values():
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return components


def assert_described(openapi: dict, method: str, path: str, response) -> None:
    """``response`` is declared for this route and status, and its JSON body fits the declared schema."""
    declared = openapi["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, f"{method} {path} does not declare {response.status_code}"
    schema = declared[str(response.status_code)]["content"]["application/json"]["schema"]
    assert schema, f"{method} {path} {response.status_code}: an empty schema describes nothing"
    document = {**schema, "components": strict(openapi)}
    jsonschema.Draft202012Validator(document).validate(response.json())


def test_every_route_declares_its_answer_and_its_errors(openapi):
    operations = {(method, path): op for path, item in openapi["paths"].items() for method, op in item.items()}
    assert set(operations) == {
        ("get", "/healthz"),
        ("get", "/v1/model"),
        ("get", "/v1/stats"),
        ("post", "/v1/grade"),
    }
    for (method, path), op in operations.items():
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok.get("$ref", "").startswith("#/components/schemas/"), f"{method} {path}: {ok}"
        if path.startswith("/v1/"):
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
    assert {"400", "413", "415", "500", "503"} <= set(operations["post", "/v1/grade"]["responses"])
    assert openapi["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


def test_real_answers_fit_the_published_schemas(grader, openapi):
    with TestClient(create_app(grader, limits=Limits(max_files=2))) as client:
        assert_described(openapi, "get", "/healthz", client.get("/healthz"))
        assert_described(openapi, "get", "/v1/model", client.get("/v1/model"))
        graded = client.post("/v1/grade", files=[("files", ("a.png", png())), ("files", ("b.png", png((9, 9, 9))))])
        assert graded.status_code == 200
        assert_described(openapi, "post", "/v1/grade", graded)
        # the record is Grade.to_dict's, key for key: a key added there must be added to the schema too
        keys = set(Grade("x", 0.0, None, None, None, None).to_dict())
        assert all(set(record) == keys for record in graded.json()["results"])
        assert graded.json()["results"][0]["grade_set"] and graded.json()["results"][0]["probabilities"]
        assert_described(openapi, "get", "/v1/stats", client.get("/v1/stats"))
        for bad in (
            client.post("/v1/grade", files=[("files", ("notes.txt", b"not a photo"))]),  # 400
            client.post("/v1/grade", files=[("files", (f"{i}.png", png())) for i in range(3)]),  # 400: too many
            client.post("/v1/grade", json={"files": []}),  # 415
        ):
            assert bad.status_code in (400, 415)
            assert_described(openapi, "post", "/v1/grade", bad)
        assert "notes.txt" in client.post("/v1/grade", files=[("files", ("notes.txt", b"x"))]).json()["error"]


def test_an_unauthorised_request_gets_the_declared_401(grader, openapi):
    with TestClient(create_app(grader, token="secret")) as client:
        for path in ("/v1/model", "/v1/stats"):
            response = client.get(path)
            assert response.status_code == 401
            assert_described(openapi, "get", path, response)


def test_a_wrong_answer_fails_the_check(grader, openapi):
    """The check can fail: an answer with a missing key, or one the schema does not name, is caught."""
    with TestClient(create_app(grader)) as client:
        response = client.get("/v1/stats")
    body = response.json()
    schema = openapi["paths"]["/v1/stats"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**schema, "components": strict(openapi)})
    assert validator.is_valid(body)
    assert not validator.is_valid({k: v for k, v in body.items() if k != "images"})
    assert not validator.is_valid({**body, "surprise": 1})
