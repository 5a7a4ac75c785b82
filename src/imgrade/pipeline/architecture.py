"""``imgrade model summary``: the network's layers, output shapes and parameter counts."""

from __future__ import annotations

from imgrade.config import RunConfig
from imgrade.core.errors import ImgradeError
from imgrade.core.registry import head_entry
from imgrade.models.axes import CUCUMBER9_GRADES
from imgrade.models.factory import build_model, head_class
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
    # the head's state as a run on CUCUMBER-9's nine grades (or K unnamed ones) would start with it
    names = list(CUCUMBER9_GRADES) if num_grades == len(CUCUMBER9_GRADES) else [f"grade {k}" for k in range(num_grades)]
    try:
        state, _ = head_class(task).initial_state(head_entry(task).make_settings({}), None, names)
    except ImgradeError:
        state = {}  # e.g. no grade table fits unnamed grades: the head's own default
    model = build_model(
        depth=depth,
        task=task,
        head=head,
        num_grades=num_grades,
        state=state,
        backbone=backbone,
        image_size=image_size,
    )
    return summarize(model, input_size=(3, image_size, image_size))
