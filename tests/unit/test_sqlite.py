"""The SQLite connection behind the engine (shop.kernel.sqlite): reads and uncontended
writes on the loop, one hop per statement otherwise, transactions where SQLAlchemy begins
them, writers that wait without blocking the loop."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Integer, String, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shop.kernel import sqlite
from shop.kernel.db import Database

pytestmark = pytest.mark.anyio


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20), unique=True)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Round trips to the connections' threads, by what they ran."""
    counts: collections.Counter[str] = collections.Counter()
    run = sqlite.Connection._run

    async def counting(self: sqlite.Connection, function: Any) -> Any:
        counts[getattr(function, "__name__", "?")] += 1
        return await run(self, function)

    monkeypatch.setattr(sqlite.Connection, "_run", counting)
    return counts


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database.connect(f"sqlite:///{tmp_path / 'things.db'}", pool_size=2)
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with database.writer() as session, session.begin():
        session.add_all([Thing(id=1, name="one"), Thing(id=2, name="two")])
    yield database
    await database.dispose()


async def test_a_read_transaction_runs_on_the_loop_with_no_hop(
    db: Database, hops: collections.Counter[str]
) -> None:
    async with db.reader() as session, session.begin():
        first = await session.get(Thing, 1)
        names = (await session.scalars(text("SELECT name FROM things ORDER BY id"))).all()
    assert first is not None
    assert first.name == "one"
    assert names == ["one", "two"]
    assert sum(hops.values()) == 0, hops


async def test_a_write_transaction_that_takes_the_lock_at_once_runs_on_the_loop(
    db: Database, hops: collections.Counter[str]
) -> None:
    async with db.writer() as session, session.begin():
        await session.execute(text("UPDATE things SET name = 'uno' WHERE id = 1"))
        names = (await session.scalars(text("SELECT name FROM things ORDER BY id"))).all()
    assert names == ["uno", "two"]
    assert sum(hops.values()) == 0, hops
    async with db.reader() as session:
        assert (await session.get(Thing, 1)).name == "uno"  # type: ignore[union-attr]


async def test_a_writer_that_meets_another_process_lock_waits_on_the_thread(
    db: Database, hops: collections.Counter[str], tmp_path: Path
) -> None:
    """Another process's writer holds the lock: BEGIN IMMEDIATE cannot take it at once, so the
    transaction goes to the thread, waits there on the busy timeout (the loop runs on) and
    commits once the lock is free."""
    other = sqlite3.connect(tmp_path / "things.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE things SET name = 'eins' WHERE id = 1")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1
        other.execute("COMMIT")

    async def writer() -> None:
        async with db.writer() as session, session.begin():
            await session.execute(text("UPDATE things SET name = 'zwei' WHERE id = 2"))

    try:
        await asyncio.wait_for(asyncio.gather(writer(), ticker()), timeout=10)
    finally:
        other.close()
    assert ticks == 10
    assert (hops["run"], hops["commit"]) == (1, 1), hops  # BEGIN with the UPDATE; COMMIT
    async with db.reader() as session:
        names = (await session.scalars(text("SELECT name FROM things ORDER BY id"))).all()
    assert names == ["eins", "zwei"]


async def test_a_deferred_transaction_that_writes_moves_to_the_thread(
    db: Database, hops: collections.Counter[str]
) -> None:
    async with db.reader() as session, session.begin():
        await session.scalars(text("SELECT name FROM things"))
        await session.execute(text("UPDATE things SET name = 'uno' WHERE id = 1"))
        await session.scalars(text("SELECT name FROM things"))
    assert sum(hops.values()) == 3, hops  # the UPDATE, the SELECT after it, COMMIT
    async with db.reader() as session, session.begin():
        assert (await session.get(Thing, 1)) is not None
    assert sum(hops.values()) == 3, hops  # the next read transaction is back on the loop


async def test_a_read_does_not_wait_for_a_writer(db: Database) -> None:
    """WAL: a reader sees the last commit while a writer holds the lock, without waiting."""
    async with db.writer() as writer, writer.begin():
        await writer.execute(text("UPDATE things SET name = 'uno' WHERE id = 1"))
        async with db.reader() as reader, reader.begin():
            names = (await reader.scalars(text("SELECT name FROM things ORDER BY id"))).all()
        assert names == ["one", "two"]


async def test_a_transaction_that_ran_nothing_costs_no_hop(
    db: Database, hops: collections.Counter[str]
) -> None:
    async with db.reader() as session, session.begin():
        await session.connection()
    assert sum(hops.values()) == 0, hops


async def test_writes_commit_and_constraint_errors_surface_as_sqlalchemy_errors(
    db: Database,
) -> None:
    async with db.writer() as session, session.begin():
        session.add(Thing(id=3, name="three"))
    with pytest.raises(IntegrityError):
        async with db.writer() as session, session.begin():
            session.add(Thing(id=4, name="one"))
    async with db.reader() as session:
        names = (await session.scalars(text("SELECT name FROM things ORDER BY id"))).all()
    assert names == ["one", "two", "three"]


async def test_a_rolled_back_write_leaves_nothing(db: Database) -> None:
    async def write_then_fail() -> None:
        async with db.writer() as session, session.begin():
            session.add(Thing(id=5, name="five"))
            await session.flush()
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await write_then_fail()
    async with db.reader() as session:
        assert await session.get(Thing, 5) is None


async def test_a_waiting_writer_does_not_block_the_event_loop(
    db: Database, hops: collections.Counter[str]
) -> None:
    """A transaction of this process holds the lock while it awaits something else: the next
    writer's BEGIN IMMEDIATE waits on SQLite's busy timeout on its connection's thread; the
    loop keeps running other coroutines meanwhile, and the writer goes on once the lock is
    free."""
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with db.writer() as session, session.begin():
            session.add(Thing(id=6, name="six"))
            await session.flush()
            holding.set()
            await release.wait()

    async def waiter() -> None:
        await holding.wait()
        async with db.writer() as session, session.begin():
            session.add(Thing(id=7, name="seven"))

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        await holding.wait()
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1
        release.set()

    await asyncio.wait_for(asyncio.gather(holder(), waiter(), ticker()), timeout=10)
    assert ticks == 10
    # The waiter's (on a connection of its own, opened meanwhile): BEGIN with its INSERT,
    # then COMMIT.
    assert (hops["run"], hops["commit"]) == (1, 1), hops
    async with db.reader() as session:
        names = (await session.scalars(text("SELECT name FROM things ORDER BY id"))).all()
    assert names == ["one", "two", "six", "seven"]


async def test_a_closed_connection_refuses_work(tmp_path: Path) -> None:
    open_connection = sqlite.creator(str(tmp_path / "x.db"), pragmas=(), timeout=1.0)
    conn = await open_connection()
    cursor = conn.cursor()
    await cursor.execute("SELECT 1")
    assert await cursor.fetchall() == [(1,)]
    await conn.close()
    await conn.close()  # twice is harmless
    with pytest.raises(Exception, match="closed"):
        conn.cursor()


async def test_many_first_connections_switch_a_fresh_file_to_wal(tmp_path: Path) -> None:
    """A freshly migrated file is in rollback-journal mode; the first connections, opened
    together, put it in WAL mode without any of them failing on "database is locked"."""
    path = tmp_path / "fresh.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    database = Database.connect(f"sqlite:///{path}", pool_size=12)

    async def read() -> int:
        async with database.reader() as session, session.begin():
            value = (await session.execute(text("SELECT x FROM t"))).scalar_one()
            await asyncio.sleep(0.01)  # hold the connection so that all twelve are opened
            return int(value)

    try:
        assert await asyncio.gather(*(read() for _ in range(12))) == [1] * 12
    finally:
        await database.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_outside_wal_mode_reads_go_to_the_thread(hops: collections.Counter[str]) -> None:
    """In-memory databases have no WAL: a reader there could wait for a lock, so no read
    runs on the event loop."""
    database = Database.connect("sqlite://")
    try:
        async with database.reader() as session, session.begin():
            await session.execute(text("SELECT 1"))  # the engine's first connect queries
        hops.clear()
        async with database.reader() as session, session.begin():
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()
    # BEGIN with the SELECT, then COMMIT: both on the thread. (An in-memory database gets a
    # new connection per checkout, so "connect" and "close" come with them.)
    assert (hops["run"], hops["commit"]) == (1, 1), hops
