"""Fixtures every tier may use, and how pytest-xdist spreads the tests (``make pytest``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The contract suite's helpers assert; every tier that imports them (the security tier does)
# gets pytest's rewritten asserts, whichever conftest is collected first.
pytest.register_assert_rewrite("tests.contract.helpers")

LIVE_PROCESS_FILES = (
    "tests/system/",
    "tests/kata/test_launcher_data.py",
    "tests/loadtests/test_live_run.py",
    "tests/security/test_server_limits.py",
    "tests/security/test_slow_clients.py",
)
"""Tests that start whole topologies as real processes and hold them to time budgets (a
service restarted within its timeouts, a Locust run without a failure). They run one after
the other on one xdist worker, so two of them never compete for the same cores."""

BROKER_STOPPING_FILES = ("tests/integration/test_broker.py",)
"""Tests that stop the shared RabbitMQ broker for a moment (``rabbitmqctl stop_app``), as
tests/system/test_event_faults.py does: they join the live-process worker, so that no two of
them stop the broker under each other's feet."""


DATABASE_INDEPENDENT_FILES = (
    "tests/unit/",
    "tests/gateway/",
    "tests/containers/",
    "tests/loadtests/test_checks.py",
    "tests/loadtests/test_report.py",
    "tests/loadtests/test_bench_options.py",
    "tests/security/test_sqlite_files.py",
    "tests/security/test_slow_clients.py",
)
"""Tests that never touch the database under test: the unit tier (fakes for ports, a private
SQLite file per test whatever TEST_DATABASE_URL says), the gateway (fake upstreams), the
container files, the benchmark's checks, report and options, the security tier's SQLite file
modes and slow clients (a gateway before small upstreams). They are marked ``once``: the
PostgreSQL pass (``make test-postgres``) would only run them a second time, unchanged."""


def redis_url() -> str | None:
    """The Redis server the ``redis`` tests use (``TEST_REDIS_URL``), if any."""
    return os.environ.get("TEST_REDIS_URL", "").strip() or None


LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def rabbitmq_url(config: pytest.Config) -> str | None:
    """The RabbitMQ broker the ``rabbitmq`` tests use: ``TEST_RABBITMQ_URL``, or the local
    broker when the run asks for them by name (``pytest -m rabbitmq``); else none."""
    url = os.environ.get("TEST_RABBITMQ_URL", "").strip()
    if url:
        return url
    expression = str(config.getoption("markexpr", "") or "")
    return LOCAL_BROKER if expression.strip() == "rabbitmq" else None


def _leave_out(config: pytest.Config, items: list[pytest.Item], marker: str) -> None:
    deselected = [item for item in items if item.get_closest_marker(marker)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(marker)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One xdist group per test file (``--dist loadgroup`` keeps a file on one worker, so its
    module fixtures are built once), except the live-process files and the ones that stop
    the broker: one group together. Database-independent files are marked ``once``. Tests
    marked ``redis`` or ``rabbitmq`` are left out (deselected, not skipped) unless
    ``TEST_REDIS_URL`` names a server, or ``TEST_RABBITMQ_URL`` a broker (or the run says
    ``-m rabbitmq``): ``make test`` needs no server at all, CI runs them on their own
    (``TEST_REDIS_URL=... pytest -m redis``)."""
    if redis_url() is None:
        _leave_out(config, items, "redis")
    if rabbitmq_url(config) is None:
        _leave_out(config, items, "rabbitmq")
    root = Path(__file__).resolve().parent.parent
    for item in items:
        path = item.path.resolve().relative_to(root).as_posix()
        live = any(
            path.startswith(prefix) for prefix in (*LIVE_PROCESS_FILES, *BROKER_STOPPING_FILES)
        )
        item.add_marker(pytest.mark.xdist_group("live-processes" if live else path))
        if any(path.startswith(prefix) for prefix in DATABASE_INDEPENDENT_FILES):
            item.add_marker(pytest.mark.once)


@pytest.fixture
def work() -> Iterator[Path]:
    """A temporary folder with a short path: a unix socket's path holds about 100 bytes, too
    few for pytest's own ``tmp_path``."""
    folder = Path(tempfile.mkdtemp(prefix="shopkata-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
