"""Two import contracts of the layers: core is a leaf, and evaluate never imports calibrate."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "imgrade"


def _imported_modules(package: str) -> dict[str, set[str]]:
    """File name -> every imgrade module it imports, at the top or inside a function."""
    found = {}
    for path in sorted((SRC / package).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[path.name] = {name for name in names if name == "imgrade" or name.startswith("imgrade.")}
    return found


def test_core_imports_nothing_of_imgrade_but_core():
    modules = _imported_modules("core")
    assert "perf.py" in modules and "grades.py" in modules
    outside = {name: sorted(m for m in imported if not m.startswith("imgrade.core")) for name, imported in modules.items()}
    assert {name: bad for name, bad in outside.items() if bad} == {}


def test_evaluate_never_imports_calibrate():
    modules = _imported_modules("evaluate")
    assert "outputs.py" in modules
    assert {name: sorted(imported) for name, imported in modules.items() if any(m.startswith("imgrade.calibrate") for m in imported)} == {}
