"""``imgrade predict``: grade image files with a run or an .onnx file; CSV or JSON on stdout.

The work is done by the runtime (``imgrade.runtime.predict``), which grades an .onnx file without
torch; this module names the verb beside the others.
"""

from imgrade.runtime.predict import predict

__all__ = ["predict"]
