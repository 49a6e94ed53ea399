"""Fixtures every tier may use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def work() -> Iterator[Path]:
    """A temporary folder with a short path: a unix socket's path holds about 100 bytes, too
    few for pytest's own ``tmp_path``."""
    folder = Path(tempfile.mkdtemp(prefix="shopkata-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
