"""SQLite database files are created readable and writable by their owner only (0600).

They hold password hashes, orders and addresses; with the usual umask (022) SQLite created
them, and their -wal and -shm files, world-readable (0644).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from shop.kernel.db import Database
from shop.kernel.migrations import upgrade

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "shop.db"
    path.parent.mkdir()
    db = Database.connect(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.writer() as session, session.begin():
            await session.execute(text("CREATE TABLE t (x INTEGER)"))
            await session.execute(text("INSERT INTO t VALUES (1)"))
        files = sorted(path.parent.iterdir())
        assert {f.name for f in files} >= {"shop.db", "shop.db-wal", "shop.db-shm"}, files
        assert {f.name: oct(mode(f)) for f in files} == {f.name: oct(0o600) for f in files}
    finally:
        await db.dispose()


def test_a_database_created_by_the_migrations_is_private(tmp_path: Path) -> None:
    path = tmp_path / "migrated.db"
    upgrade(f"sqlite:///{path}", ["identity"])
    for file in tmp_path.iterdir():
        assert mode(file) == 0o600, (file.name, oct(mode(file)))


async def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    # An operator's choice for a file that exists is left alone.
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    db = Database.connect(f"sqlite:///{path}")
    try:
        async with db.reader() as session:
            assert (await session.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await db.dispose()
    assert mode(path) == 0o640
