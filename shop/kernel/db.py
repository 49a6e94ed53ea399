"""Database engine and session helpers shared by every deployable.

SQLite is the embedded default (SQLAlchemy's aiosqlite dialect over the connection of
``shop.kernel.sqlite``): WAL journal, a busy timeout, and write
transactions opened with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy
timeout instead of failing on a stale snapshot. PostgreSQL runs on asyncpg.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import DateTime, Dialect, MetaData, TypeDecorator, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from shop.kernel import sqlite

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 30_000


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every database (SQLite keeps no zone, so add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_metadata() -> MetaData:
    """A context's own ``MetaData``, with the naming convention migrations rely on."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalise_url(url: str) -> str:
    """Accept plain ``sqlite://`` and ``postgresql://`` URLs and pick the async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.drivername != "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql" and parsed.drivername != "postgresql+asyncpg":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend not in {"sqlite", "postgresql"}:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url`` with the SQLite tuning applied."""
    url = normalise_url(url)
    if not is_sqlite(url):
        return create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, echo=echo
        )
    parsed = make_url(url)
    memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"poolclass": NullPool} if memory else {"pool_size": pool_size}
    # aiosqlite's dialect, with a connection that costs one thread hop per statement instead
    # of four (shop.kernel.sqlite). The connection is in autocommit mode: "begin" below
    # decides when a transaction starts, and in which mode.
    engine = create_async_engine(
        url,
        echo=echo,
        async_creator=sqlite.creator(
            parsed.database or ":memory:",
            pragmas=(
                "PRAGMA synchronous=NORMAL",
                f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                "PRAGMA foreign_keys=ON",
            ),
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            uri=parsed.query.get("uri") == "true",
        ),
        **kwargs,
    )

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        # Sent with the transaction's first statement, in the same hop to the thread.
        conn.connection.driver_connection.begin_with_next(f"BEGIN {mode}")

    return engine


class SQLiteSession(AsyncSession):
    """A session that ``async with`` closes where it is used.

    ``AsyncSession`` closes in a task of its own, so that a cancellation cannot cut the close
    short; the task costs the event loop two or three cycles, and in a busy process each
    cycle waits for every request in flight. On SQLite (``shop.kernel.sqlite``) the close
    returns the connection with no round trip, unless its transaction went to the
    connection's thread; if a cancellation does cut that short, the pool terminates the
    connection. PostgreSQL's sessions keep SQLAlchemy's way: their close is a round trip.
    """

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        await self.close()


@dataclass(frozen=True)
class Database:
    """An engine plus its two session factories (reads, and writes that lock early)."""

    engine: AsyncEngine
    reader: async_sessionmaker[AsyncSession]
    writer: async_sessionmaker[AsyncSession]

    @classmethod
    def connect(cls, url: str, *, pool_size: int = 10) -> Database:
        engine = create_engine(url, pool_size=pool_size)
        write_engine = (
            engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite(url) else engine
        )
        kind = SQLiteSession if is_sqlite(url) else AsyncSession
        return cls(
            engine=engine,
            reader=async_sessionmaker(engine, class_=kind, expire_on_commit=False),
            writer=async_sessionmaker(write_engine, class_=kind, expire_on_commit=False),
        )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session to read with: the current request's, if it is on this database.

        Reusing it means an in-process call from one context to another inside a request
        takes no second connection (no pool exhaustion under load, no second snapshot).
        """
        current = _request_session.get()
        if current is not None and current[0] is self:
            yield current[1]
            return
        async with self.reader() as session:
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def app_database(request: Request) -> Database:
    """The deployable's database, made in its lifespan and kept on ``app.state``."""
    db = getattr(request.app.state, "database", None)
    if not isinstance(db, Database):
        raise RuntimeError("app.state.database is not set: create the app with its lifespan")
    return db


async def database(request: Request) -> Database:
    """:func:`app_database` as a dependency (``async``: a plain ``def`` dependency would cost
    a hop to the thread pool on every request)."""
    return app_database(request)


_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_request_session: ContextVar[tuple[Database, AsyncSession] | None] = ContextVar(
    "shop_request_session", default=None
)


@asynccontextmanager
async def _transaction(
    db: Database, factory: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AsyncSession]:
    # The connection (and on SQLite the write lock) is taken at the first statement.
    async with factory() as session, session.begin():
        token = _request_session.set((db, session))
        try:
            yield session
        finally:
            _request_session.reset(token)


async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed when the endpoint returns without error."""
    db = app_database(request)
    factory = db.reader if request.method in _SAFE_METHODS else db.writer
    async with _transaction(db, factory) as session:
        yield session


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only transaction whatever the method (e.g. a login, which is a POST)."""
    db = app_database(request)
    async with _transaction(db, db.reader) as session:
        yield session


Session = Annotated[AsyncSession, Depends(request_session, scope="function")]
"""The request's session; services ``flush()``, this dependency commits."""
ReadSession = Annotated[AsyncSession, Depends(read_session, scope="function")]
"""A request session that never writes, so it never holds SQLite's write lock."""


async def serialize(session: AsyncSession, key: str) -> None:
    """Make writers that name the same ``key`` take turns until this transaction ends.

    PostgreSQL takes a transaction-scoped advisory lock; on SQLite a write transaction
    (``BEGIN IMMEDIATE``) already excludes every other writer.
    """
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": int.from_bytes(digest, "big", signed=True)},
        )


Db = Annotated[Database, Depends(database)]
"""The deployable's database, for the operations that open their own short sessions: those
that commit step by step (sagas), and those that call another context, which close their
session before the call instead of holding a connection while the other context answers."""
