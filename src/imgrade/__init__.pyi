# What type checkers see of the package: __init__.py imports these names on first use.
from imgrade.pipeline import compare as compare
from imgrade.pipeline import evaluate as evaluate
from imgrade.pipeline import suggest as suggest
from imgrade.pipeline import train as train
from imgrade.runtime.api import Grade as Grade
from imgrade.runtime.api import Grader as Grader

__version__: str
__all__ = ["Grade", "Grader", "compare", "evaluate", "suggest", "train", "__version__"]
