"""Fixtures every tier may use, and how pytest-xdist spreads the tests (``make pytest``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

LIVE_PROCESS_FILES = (
    "tests/system/",
    "tests/kata/test_launcher_data.py",
    "tests/loadtests/test_live_run.py",
)
"""Tests that start whole topologies as real processes and hold them to time budgets (a
service restarted within its timeouts, a Locust run without a failure). They run one after
the other on one xdist worker, so two of them never compete for the same cores."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One xdist group per test file (``--dist loadgroup`` keeps a file on one worker, so its
    module fixtures are built once), except the live-process files: one group together."""
    root = Path(__file__).resolve().parent.parent
    for item in items:
        path = item.path.resolve().relative_to(root).as_posix()
        live = any(path.startswith(prefix) for prefix in LIVE_PROCESS_FILES)
        item.add_marker(pytest.mark.xdist_group("live-processes" if live else path))


@pytest.fixture
def work() -> Iterator[Path]:
    """A temporary folder with a short path: a unix socket's path holds about 100 bytes, too
    few for pytest's own ``tmp_path``."""
    folder = Path(tempfile.mkdtemp(prefix="shopkata-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
