"""Fine-tuning: start a new run from the weights of another run (``imgrade train --init RUN``).

The backbone always comes from the source; it must be the same (with the same ``--depth`` where
that sizes it, as for the reference). The head comes too when it would mean the same thing here:
the same task and head type and the same grades in the same order. Otherwise the head starts
fresh and learns the new grades on the pretrained features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from imgrade.config import ModelConfig
from imgrade.core.checkpoint import find_run_checkpoint
from imgrade.core.errors import ConfigError
from imgrade.core.registry import backbone_entry
from imgrade.models.factory import head_class
from imgrade.runtime.run_checkpoint import Checkpoint


@dataclass
class InitSource:
    """What ``plan_init`` decided: the weights to load, and whether the head is among them."""

    path: Path
    """The checkpoint file the weights come from."""
    model_state: dict[str, torch.Tensor]
    fresh_head: str | None
    """Why the head starts fresh; None when it is loaded too."""


def _architecture(task: str, head: str) -> str:
    """The head type "auto" stands for with ``task`` (see Head.default_architecture)."""
    if head != "auto":
        return head
    return head_class(task).default_architecture


def plan_init(
    init: str | Path, model: ModelConfig, grade_names: list[str] | None, head_state: dict | None = None
) -> InitSource:
    """Read the run or checkpoint ``init`` and check that it can start a run of ``model`` on this data.

    Args:
        init: a run folder (its best.pt is used) or a .pt checkpoint.
        model: this run's model settings.
        grade_names: this data's grades in rank order; None for a continuous target.
        head_state: this run's head state (``Head.initial_state``, e.g. the axes head's grade
            table); the head is loaded only from a run whose head has the same state.

    Raises:
        CheckpointError: no such run or file, or not a readable checkpoint.
        ConfigError: another backbone or depth, or other grade names (a typo or another grading scheme:
            refused rather than silently learning a head for grades that do not line up).
    """
    path = find_run_checkpoint(init)
    ckpt = Checkpoint.load(path)
    source = ckpt.config.model
    backbone = source.backbone
    if backbone != model.backbone:
        raise ConfigError(
            f"--init {path} has backbone {backbone} but this run has {model.backbone}: set --backbone {backbone}"
        )
    depth = source.depth
    if backbone_entry(backbone).uses_depth and depth != model.depth:
        raise ConfigError(f"--init {path} has depth {depth} but this run has depth {model.depth}: set --depth {depth}")
    source_grades = ckpt.grade_names
    if source_grades is not None and grade_names is not None and set(source_grades) != set(grade_names):
        raise ConfigError(
            f"--init {path} was trained on grades {','.join(source_grades)} but this data has grades "
            f"{','.join(grade_names)}: name this data's grades as the source does (grade folders or grades.txt), "
            "or --init a run trained on these grades"
        )
    source_task = source.task
    source_head = _architecture(source_task, source.head)
    if source_task != model.task:
        fresh = f"the task differs ({source_task} there, {model.task} here)"
    elif source_head != _architecture(model.task, model.head):
        fresh = f"the head differs ({source_head} there, {_architecture(model.task, model.head)} here)"
    elif source_grades is None or grade_names is None:
        where = "there" if source_grades is None else "here"
        fresh = f"the target is continuous {where}, so the head's scale need not carry over"
    elif list(source_grades) != list(grade_names):
        fresh = f"the grades are in another order ({','.join(source_grades)} there, {','.join(grade_names)} here)"
    elif ckpt.head_state != (head_state or {}):
        fresh = "the head's state differs (e.g. another grade table)"
    else:
        fresh = None
    return InitSource(path, ckpt.model_state, fresh)


def load_init(model: torch.nn.Module, source: InitSource) -> str:
    """Copy the source's backbone (and head, unless ``source.fresh_head``) into ``model``; returns a log line.

    Raises:
        ConfigError: the source's backbone does not fit this model's (another architecture).
    """
    parts = ["backbone"] if source.fresh_head else ["backbone", "head"]
    for part in parts:
        prefix = f"{part}."
        state = {k[len(prefix) :]: v for k, v in source.model_state.items() if k.startswith(prefix)}
        try:
            getattr(model, part).load_state_dict(state)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise ConfigError(
                f"--init {source.path}: its {part} does not fit this run's ({first[:160]}): "
                "--init a run trained with the same --depth and imgrade version"
            ) from None
    if source.fresh_head:
        return f"init: backbone from {source.path}; fresh head because {source.fresh_head}"
    return f"init: backbone and head from {source.path}"
