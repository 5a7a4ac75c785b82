"""Fuzz tests: hypothesis's caches in a temporary folder, and after the run one line per reader:
how many inputs it was fed and what came out."""

import sys
import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir

_hypothesis_home = tempfile.TemporaryDirectory(prefix="imgrade-hypothesis-")  # not .hypothesis/ in the repository
set_hypothesis_home_dir(_hypothesis_home.name)
_modules: list = []
sys.path.append(str(Path(__file__).parent))  # fuzzing.py, which the fuzz tests share


def pytest_collection_modifyitems(items):
    for item in items:
        module = getattr(item, "module", None)
        if hasattr(module, "TALLY") and module not in _modules:
            _modules.append(module)


def pytest_terminal_summary(terminalreporter):
    for module in _modules:
        for reader, tally in module.TALLY.items():
            if tally["inputs"]:
                terminalreporter.write_line(
                    f"fuzz {reader}: {tally['inputs']} inputs, {tally['imgrade_errors']} imgrade errors, "
                    f"{tally['accepted']} accepted, {tally['unexpected']} unexpected, slowest {tally['slowest_s']:.3f} s"
                )
