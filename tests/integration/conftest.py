"""Fixtures of the integration tier: real, migrated databases.

Each test gets a scratch database of its own (``tests.support.scratch_database``): a SQLite
file by default, a fresh PostgreSQL database when ``TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from shop.kernel.db import Database
from tests import support

Connect = Callable[[list[str] | None], Awaitable[Database]]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    """An empty scratch database (nothing migrated)."""
    async with support.scratch_database(tmp_path) as url:
        yield url


@pytest.fixture
async def connect(database_url: str) -> AsyncIterator[Connect]:
    """Migrate the scratch database (the given contexts, or all) and connect to it."""
    made: list[Database] = []

    async def connect(contexts: list[str] | None = None) -> Database:
        await support.migrate(database_url, contexts)
        db = Database.connect(database_url)
        made.append(db)
        return db

    try:
        yield connect
    finally:
        for db in made:
            await db.dispose()
