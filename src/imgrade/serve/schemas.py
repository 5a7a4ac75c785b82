"""The service's answers as pydantic models: FastAPI checks each answer against its model, and
``/openapi.json`` (and the ``/docs`` page) describes them.

``GradeResult`` is :meth:`imgrade.runtime.grading.Grade.to_dict`, the record ``imgrade predict
--format json`` prints too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class GradeResult(BaseModel):
    """One photo's grade (``Grade.to_dict``)."""

    image: str = Field(description="The upload's file name, or 'files part N' for a part without one.")
    score: float = Field(description="Where the photo lies on the grade axis (0 is the first grade), or the target.")
    grade: str | None = Field(description="The grade's name; null for a continuous target.")
    grade_index: int | None = Field(description="The grade's position in the model's grades, from 0.")
    grade_set: list[str] | None = Field(
        description="The grades that hold the true one with the calibrated coverage; null when not calibrated."
    )
    probabilities: dict[str, float] | None = Field(
        description="Each grade's probability, in grade order; null for regression."
    )


class GradeAnswer(BaseModel):
    """The answer of ``POST /v1/grade``."""

    results: list[GradeResult] = Field(description="One record per part named files, in upload order.")


class GradeSets(BaseModel):
    method: str = Field(description="How grade sets are made: 'aps' (from probabilities) or 'interval' (on the score).")
    alpha: float = Field(description="The share of photos whose set may miss the true grade.")
    coverage: float = Field(description="1 - alpha: the share whose set holds the true grade.")


class InputSpec(BaseModel):
    size: int = Field(description="Each photo is resized to size x size pixels.")
    resize_mode: Literal["squash", "crop", "pad"] = Field(
        description="How a photo that is not square is made square before that: squash (stretched whole), "
        "crop (the centred square) or pad (centred on bands of its edges' mean colour)."
    )
    channels: Literal["RGB"]
    dtype: Literal["uint8"]
    layout: Literal["NHWC"]


class ServerLimits(BaseModel):
    max_files: int = Field(description="Most photos in one request.")
    max_upload_mb: float = Field(description="Largest request body in MB.")
    max_decode_mb: float = Field(description="Most memory one photo may take to decode, in MB.")


class ModelInfo(BaseModel):
    """The answer of ``GET /v1/model``: the grader's description and this server's limits."""

    runtime: Literal["torch", "onnx", "openvino"]
    precision: Literal["fp32", "bf16", "int8"] = Field(
        description="What the network computes in: int8 weights for a file from export --int8, "
        "bf16 where OpenVINO grades on a CPU with bf16 units, else fp32."
    )
    task: str = Field(description="The head, e.g. regression, coral, corn, sord.")
    target: Literal["grade", "continuous"]
    grades: list[str] | None = Field(description="The grade names in order; null for a continuous target.")
    rule: str | None = Field(description="How a score becomes a grade, in words.")
    cut_points: list[float] | None = Field(description="The cut points on the score axis, when they decide.")
    thresholds_reason: str | None = Field(description="Why calibration kept the rule it kept.")
    score_range: list[float] | None = Field(description="[0, number of grades - 1].")
    grade_sets: GradeSets | None = Field(description="The conformal grade sets; null when not calibrated.")
    input: InputSpec
    version: str = Field(description="The imgrade version that trained or exported the model.")
    model: str = Field(description="The model's file or folder name.")
    limits: ServerLimits
    auth: bool = Field(description="Whether the /v1/ routes need 'Authorization: Bearer TOKEN'.")
    model_card: str | None = Field(default=None, description="The model card (Markdown), when the model has one.")
    collect: bool = Field(default=False, description="Whether every photo graded is kept (serve --collect DIR).")
    label: bool = Field(default=False, description="Whether the /v1/label routes are on (serve --label TO_LABEL.csv).")


class PhotoToLabel(BaseModel):
    index: int = Field(description="The photo's number in TO_LABEL.csv, from 0: GET /v1/label/photos/{index}.")
    path: str = Field(description="Its path as TO_LABEL.csv writes it.")
    suggested: str | None = Field(description="TO_LABEL.csv's suggested column, when it has one: information only.")


class LastLabel(BaseModel):
    path: str = Field(description="The photo's path as LABELS.csv writes it.")
    grade: str


class LabelState(BaseModel):
    """The answer of the ``/v1/label`` routes: progress and the next photo to label."""

    total: int = Field(description="Photos in TO_LABEL.csv.")
    labelled: int = Field(description="How many of them LABELS.csv holds.")
    next: PhotoToLabel | None = Field(description="The next photo without a label; null when all are labelled.")
    last: LastLabel | None = Field(description="The label POST /v1/label/undo would remove; null when none.")
    labels_file: str = Field(description="LABELS.csv's file name.")
    grades: list[str] = Field(description="The grades a label may have, in the model's order.")


class Stats(BaseModel):
    """The answer of ``GET /v1/stats``: what the micro-batcher has done since the server started."""

    forward_passes: int
    images: int
    largest_batch: int
    mean_batch_size: float


class Health(BaseModel):
    """The answer of ``GET /healthz``."""

    status: Literal["ok"]


class ErrorBody(BaseModel):
    """Every error answer: one line that says what is wrong and the fix."""

    error: str


def error_responses(*codes: int) -> dict[int | str, dict]:
    """The ``responses=`` of a route that can answer these error codes, each with an ``ErrorBody``."""
    return {code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in codes}


ERROR_MEANINGS = {
    400: "Bad input: no part named files, a part that is not an image (named), too many files, a malformed body.",
    401: "Missing or wrong token (the server was started with one).",
    404: "Not found.",
    409: "The photo is labelled already.",
    408: "The body did not arrive within the request timeout.",
    413: "The body is over the upload limit.",
    415: "The body is not multipart/form-data.",
    431: "The request headers are too large.",
    500: "The model failed on these photos; other requests are unaffected.",
    503: "No answer within the request timeout, or too many open connections.",
}
