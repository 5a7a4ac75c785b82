"""``imgrade model summary``: the network's layers, output shapes and parameter counts."""

from __future__ import annotations

from imgrade.config import RunConfig
from imgrade.models.axes import CUCUMBER9_GRADES, CUCUMBER9_TABLE, parse_grade_axes
from imgrade.models.factory import build_model
from imgrade.models.summary import summarize


def model_summary(
    *,
    depth: int = 29,
    image_size: int = 32,
    task: str = "regression",
    head: str = "auto",
    num_grades: int = 9,
    backbone: str = "reference",
) -> str:
    """The layer table of the network with output shapes and parameter counts."""
    RunConfig.from_dict(
        {"model": {"depth": depth, "task": task, "head": head, "backbone": backbone}}
    )  # validates with the flag names
    grade_axes = None
    if task == "axes" and num_grades == len(CUCUMBER9_GRADES):  # the built-in table: size and shape
        grade_axes = parse_grade_axes(CUCUMBER9_TABLE, list(CUCUMBER9_GRADES))
    model = build_model(
        depth=depth,
        task=task,
        head=head,
        num_grades=num_grades,
        grade_axes=grade_axes,
        backbone=backbone,
        image_size=image_size,
    )
    return summarize(model, input_size=(3, image_size, image_size))
