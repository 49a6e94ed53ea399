"""Fixtures of the unit tier: no HTTP server, no shared database.

Services that take a session or a ``Database`` get a private SQLite file in ``tmp_path``
holding only their own context's tables (migrated with the context's own stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from shop.kernel.db import Database
from tests import support

MakeDatabase = Callable[[list[str]], Awaitable[Database]]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make_database(tmp_path: Path) -> AsyncIterator[MakeDatabase]:
    """A factory of migrated SQLite databases (only the given contexts' tables)."""
    made: list[Database] = []

    async def make(contexts: list[str]) -> Database:
        url = f"sqlite+aiosqlite:///{tmp_path / f'unit-{len(made)}.db'}"
        await support.migrate(url, contexts)
        db = Database.connect(url)
        made.append(db)
        return db

    try:
        yield make
    finally:
        for db in made:
            await db.dispose()
