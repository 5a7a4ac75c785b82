"""One function per verb, each callable from Python as the CLI calls it, each imported on first use.

    train          pipeline/trainer.py       a run folder from an image set (ensemble members: members.py)
    calibrate      pipeline/calibrator.py    cut points and grade sets from a run's validation split
    evaluate       pipeline/evaluator.py     metrics, pictures and a report for a run's test split
    predict        pipeline/predictor.py     grades of image files (torch-free with an .onnx file)
    suggest        pipeline/suggester.py     which unlabelled photos to label next (torch-free with an .onnx file)
    export         pipeline/exporter.py      a run as one ONNX grader file
    data_*         pipeline/datasets.py      describe, download or generate image sets
    model_summary  pipeline/architecture.py  the network's layer table
    demo           pipeline/showcase.py      the whole pipeline on synthetic cucumbers

Recipes call the verbs and are never called by them: ``compare`` (pipeline/comparer.py, every
formulation side by side, with recipe strings parsed in recipe.py) and ``fewshot``
(pipeline/fewshot_trainer.py, pretrain on synthetic photos, fine-tune on real ones). The run
folder's checks live in runs.py; the rows predict writes (both engines), and their files, in rows.py.

No module is named as a verb, so ``pipeline.train`` is always the function. Nothing is imported
until a verb is first used: ``predict`` with an .onnx file then runs without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

VERBS = {
    "train": "trainer",
    "calibrate": "calibrator",
    "evaluate": "evaluator",
    "predict": "predictor",
    "suggest": "suggester",
    "export": "exporter",
    "compare": "comparer",
    "fewshot": "fewshot_trainer",
    "data_info": "datasets",
    "data_download": "datasets",
    "data_synth": "datasets",
    "model_summary": "architecture",
    "demo": "showcase",
}
"""Verb -> the module of this package that defines it."""

__all__ = list(VERBS)


def __getattr__(name: str) -> Any:
    if name not in VERBS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{VERBS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
