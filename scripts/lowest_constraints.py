"""Print pip constraints that pin each dependency of imgrade to its lowest allowed version.

    python scripts/lowest_constraints.py [EXTRA ...] > lowest.txt   (default extras: serve train test)

Every requirement of the base install and of the extras named must have a ``>=`` minimum; each
becomes ``name==minimum``. Left out are what constraints.txt pins: torch, whose CPU build CI keeps
(an older torch from the index is a multi-GB CUDA build; pyproject.toml says how its minimum was
derived, and imgrade refuses an older torch when it loads a checkpoint), and the linters. ``scripts/lowest_deps.sh`` installs these pins and runs a smoke subset of the tests.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
UNPINNED = {"torch", "ruff", "import-linter"}  # pinned in constraints.txt
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def lowest_pins(requirements: list[str]) -> list[str]:
    """``name==minimum`` for each requirement (self-references and UNPINNED names skipped).

    >>> lowest_pins(["numpy>=1.24", "pyyaml >= 6.0.1, <7", "imgrade[train]", "torch>=2.10"])
    ['numpy==1.24', 'pyyaml==6.0.1']
    """
    pins = []
    for requirement in requirements:
        name, _, spec = REQUIREMENT.match(requirement.split(";")[0]).groups()
        if name.lower() == "imgrade" or name.lower() in UNPINNED:
            continue
        minimum = re.search(r">=\s*([^,\s]+)", spec)
        if minimum is None:
            raise SystemExit(f"{requirement!r} in pyproject.toml has no >= minimum: give it one")
        pins.append(f"{name}=={minimum.group(1)}")
    return pins


def main(extras: list[str]) -> int:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project["optional-dependencies"]
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra {unknown[0]!r}: pyproject.toml has {', '.join(optional)}")
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += optional[extra]
    print("\n".join(sorted(set(lowest_pins(requirements)), key=str.lower)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["serve", "train", "test"]))
