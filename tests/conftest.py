"""Fixtures shared by the whole suite."""

from pathlib import Path

import pytest


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder beside the repository (real CUCUMBER-9 samples); skips where absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared"
    if not path.is_dir():
        pytest.skip("../shared is absent: the real CUCUMBER-9 sample lives there")
    return path
