"""Shared test fixtures: the one helper that finds the real data files in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Directory of the real data files: $TPCFLOW_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("TPCFLOW_DATA", REPO.parent / "shared" / "data"))


def data_path(relpath: str) -> Path:
    """Path of a real data file; skip if it is missing, but fail under CI=true."""
    path = data_dir() / relpath
    if not path.exists():
        msg = f"real data file {relpath} not found under {data_dir()} (set TPCFLOW_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data():
    """Fixture form of :func:`data_path`: ``shared_data("larcv3/cosmic_tagging_light.h5")``."""
    return data_path
