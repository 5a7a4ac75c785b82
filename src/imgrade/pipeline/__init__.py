"""One function per verb, each in its own module, each callable from Python as the CLI calls it.

    train      pipeline/train.py      a run folder from an image set (ensemble members: ensemble.py)
    calibrate  pipeline/calibrate.py  cut points and grade sets from a run's validation split
    evaluate   pipeline/evaluate.py   metrics, pictures and a report for a run's test split
    predict    pipeline/predict.py    grades of image files (torch-free with an .onnx file)
    export     pipeline/export.py     a run as one ONNX grader file
    data_*     pipeline/data.py       describe, download or generate image sets
    model_summary  pipeline/model.py  the network's layer table
    demo       pipeline/demo.py       the whole pipeline on synthetic cucumbers

Recipes call the verbs and are never called by them: ``compare`` (pipeline/compare.py, every
formulation side by side, with recipe strings parsed in recipe.py) and ``fewshot``
(pipeline/fewshot.py, pretrain on synthetic photos, fine-tune on real ones). The run folder's
checks live in runs.py.

``imgrade predict`` with an .onnx file runs without torch: it calls ``imgrade.runtime.predict``,
which this package only names.
"""

from imgrade.pipeline.calibrate import calibrate
from imgrade.pipeline.compare import compare
from imgrade.pipeline.data import data_download, data_info, data_synth
from imgrade.pipeline.demo import demo
from imgrade.pipeline.evaluate import evaluate
from imgrade.pipeline.export import export
from imgrade.pipeline.fewshot import fewshot
from imgrade.pipeline.model import model_summary
from imgrade.pipeline.predict import predict
from imgrade.pipeline.train import train

# `pipeline.train` is the function; its module is importlib.import_module("imgrade.pipeline.train")
__all__ = [
    "train",
    "calibrate",
    "evaluate",
    "predict",
    "export",
    "compare",
    "fewshot",
    "data_info",
    "data_download",
    "data_synth",
    "model_summary",
    "demo",
]
