"""imgrade's version, in a leaf module: every layer may import it without importing the package's verbs.

Kept equal to ``pyproject.toml``'s ``version`` (tests/unit/test_packaging.py checks).
"""

__version__ = "0.1.0"
