"""Which optional extra a missing package comes from, so that a verb says what to install in one line.

``pip install imgrade`` grades and serves .onnx files with numpy, Pillow and ONNX Runtime; the
extras in pyproject.toml add the rest (``train``: PyTorch and what training, export and plots need;
``serve``: the HTTP service; ``timm``: timm backbones).
"""

from __future__ import annotations

# top-level module -> (the name a user knows it by, the extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("PyTorch", "train"),
    "coral_pytorch": ("coral-pytorch", "train"),
    "matplotlib": ("matplotlib", "train"),
    "scipy": ("SciPy", "train"),
    "onnx": ("onnx", "train"),
    "onnxscript": ("onnxscript", "train"),
    "onnx_ir": ("onnxscript", "train"),
    "fastapi": ("FastAPI", "serve"),
    "starlette": ("FastAPI", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "multipart": ("python-multipart", "serve"),
    "python_multipart": ("python-multipart", "serve"),
    "timm": ("timm", "timm"),
    "openvino": ("OpenVINO", "openvino"),
}


def missing_extra(error: ModuleNotFoundError, verb: str) -> str | None:
    """The line that names the extra to install, or None when the missing module is none of the extras'.

    >>> missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch.nn"), "train")
    "imgrade train needs PyTorch: pip install 'imgrade[train]'"
    >>> missing_extra(ModuleNotFoundError("No module named 'nothing'", name="nothing"), "train") is None
    True
    """
    top = (error.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    package, extra = EXTRAS[top]
    return f"imgrade {verb} needs {package}: pip install 'imgrade[{extra}]'"
