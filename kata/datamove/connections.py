"""The two databases of a move: their URLs, whether they exist, their migration streams,
and the read snapshot and single write transaction every move runs in."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kata.datamove.tables import DataMoveError, Progress, tables_of
from launcher import databases
from shop.kernel.db import create_engine, normalise_url
from shop.kernel.migrations import alembic_config, upgrade, version_table


def describe_url(url: str) -> str:
    """A database URL fit for messages and the ledger: no password, SQLite as a path."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:{Path(parsed.database or ':memory:').resolve()}"
    return parsed.set(drivername="postgresql").render_as_string(hide_password=True)


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:"):
        raise DataMoveError(f"{url}: an in-memory SQLite database cannot hold moved data")
    return Path(parsed.database).resolve()


def same_database(first: str, second: str) -> bool:
    one, two = _sqlite_path(first), _sqlite_path(second)
    if one is not None or two is not None:
        return one == two
    a, b = make_url(first), make_url(second)
    return (a.host, a.port, a.database) == (b.host, b.port, b.database)


def _plain_postgres(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _postgres_exists(url: str) -> bool:
    try:
        conn = await asyncpg.connect(_plain_postgres(url), timeout=10)
    except asyncpg.InvalidCatalogNameError:
        return False
    except (OSError, asyncpg.PostgresError) as exc:
        where = make_url(url)
        raise DataMoveError(
            f"cannot reach PostgreSQL at {where.host}:{where.port or 5432}:"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    await conn.close()
    return True


async def database_exists(url: str) -> bool:
    path = _sqlite_path(url)
    if path is not None:
        return path.is_file()
    return await _postgres_exists(url)


async def create_if_missing(url: str) -> None:
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    server = make_url(url).set(database="postgres").render_as_string(hide_password=False)
    await databases.ensure_postgres_databases_async(server, {"target": url})


def normalised(url: str, role: str) -> str:
    try:
        return normalise_url(url)
    except (ValueError, SQLAlchemyError) as exc:
        raise DataMoveError(f"the {role} database URL {url!r} is not usable: {exc}") from exc


async def context_tables(engine: AsyncEngine, context: str) -> tuple[set[str], str | None]:
    """Which of the context's tables exist, and the revision of its migration stream."""

    def look(sync: SyncConnection) -> tuple[set[str], str | None]:
        names = set(inspect(sync).get_table_names())
        revision = None
        if version_table(context) in names:
            row = sync.execute(
                text(f"SELECT version_num FROM {version_table(context)}")  # noqa: S608 (ours)
            ).first()
            revision = None if row is None else str(row[0])
        return names, revision

    async with engine.connect() as conn:
        return await conn.run_sync(look)


def _head(context: str, url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(context, url)).get_current_head()


async def migrate(url: str, context: str) -> None:
    # Alembic runs its own event loop: off this one.
    await asyncio.to_thread(upgrade, url, [context])


async def prepare_existing(
    engine: AsyncEngine, url: str, context: str, role: str, progress: Progress
) -> None:
    """The context's tables must be there; its stream is brought to head if it is behind."""
    names, revision = await context_tables(engine, context)
    missing = [table.name for table in tables_of(context) if table.name not in names]
    if missing:
        raise DataMoveError(
            f"the {role} database {describe_url(url)} has no {context} tables"
            f" ({', '.join(missing)} missing): is it the right database? Nothing was changed."
        )
    if revision is not None and revision != _head(context, url):
        progress(f"{context}: migrating the {role}'s {context} stream from {revision} to head")
        await migrate(url, context)


@asynccontextmanager
async def open_engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read transaction that sees one snapshot of the database for all its queries."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


@asynccontextmanager
async def writing(engine: AsyncEngine, context: str) -> AsyncIterator[AsyncConnection]:
    """ONE write transaction: SQLite's write lock taken at once, and on PostgreSQL a lock
    that makes two moves of the same context take turns. Rolled back on any error."""
    writer = engine.execution_options(sqlite_begin="IMMEDIATE")
    async with writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            key = hashlib.blake2b(f"kata-data-move:{context}".encode(), digest_size=8).digest()
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": int.from_bytes(key, "big", signed=True)},
            )
        yield conn
