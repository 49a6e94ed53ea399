"""An asyncio SQLite connection: reads and uncontended writes on the event loop, a thread for
writers that must wait.

SQLAlchemy's ``sqlite+aiosqlite`` dialect drives the ``aiosqlite`` package, which runs each
connection on a thread of its own (right: a query, or a writer waiting on SQLite's busy
timeout, never blocks the event loop), but hops to that thread and back for every step of
every statement: make a cursor, execute, fetch, close. A product view (begin, two selects,
commit, the pool's reset) took 13 round trips, each a queue hand-off, a thread wake-up and
a wake-up of the event loop: about 350 of the 2,400 CPU microseconds a product view cost
(docs/benchmarks.md, "Where the time went").

This module keeps aiosqlite's model where it matters (a thread per connection, so that a
writer waiting on the busy timeout never blocks the event loop) and its surface as
SQLAlchemy's adapter uses it, but:

- a statement is one round trip: execute and fetch every row on the thread, hand them back;
- a ``BEGIN`` travels with the transaction's first statement
  (:meth:`Connection.begin_with_next`), and ending a transaction that never began is free;
- a read transaction (``BEGIN DEFERRED`` and only ``SELECT`` so far) runs on the event loop
  itself, with no round trip at all: in WAL mode a reader takes no lock a writer holds, so
  it never waits on the busy timeout;
- a write transaction (``BEGIN IMMEDIATE``) tries to take the write lock on the event loop
  without waiting (busy timeout 0 for that one statement). If it gets it, the whole
  transaction runs there: in WAL mode the lock holder never waits for anyone, up to its
  COMMIT. If another writer holds the lock (another process, or a transaction of this one
  that awaits something while it holds it), the transaction goes to the thread and waits
  there on the busy timeout, one hop a statement;
- the first write of a deferred transaction, and everything outside WAL mode (an in-memory
  database), go to the thread.

A product view took 13 round trips on aiosqlite; it takes none. A write transaction took one
a statement, plus its COMMIT; uncontended, it takes none (a charge in payments, two write
transactions: 3,200 -> 1,880 CPU microseconds).

Plug it in with ``create_async_engine(url, async_creator=...)`` (:func:`creator`); the dialect,
the URL (``sqlite+aiosqlite``) and the SQL stay SQLAlchemy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = object()
_READS = re.compile(r"\s*SELECT\b", re.IGNORECASE)
"""A statement that only reads (SQLAlchemy writes every query as SELECT ...)."""
_IMMEDIATE = re.compile(r"\s*BEGIN\s+IMMEDIATE\b", re.IGNORECASE)

Description = tuple[tuple[str, None, None, None, None, None, None], ...] | None


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _serve(jobs: SimpleQueue[Any]) -> None:
    """The connection's thread: run each job, answer on the loop that asked."""
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        loop, future, function = job
        try:
            result, error = function(), None
        except BaseException as exc:  # handed to the awaiting coroutine, not lost
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, future, result, error)


class Cursor:
    """A cursor whose ``execute`` runs the statement and fetches its rows in one hop."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        self._set(await self._connection._statement(sql, parameters or (), many=False))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        self._set(await self._connection._statement(sql, list(parameters), many=True))
        return self

    def _set(self, outcome: tuple[list[Any], Description, int, int | None]) -> None:
        self._rows, self.description, self.rowcount, self.lastrowid = outcome

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = size or self.arraysize
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []

    async def setinputsizes(self, *_: Any) -> None:
        return None


class Connection:
    """One ``sqlite3`` connection on a thread of its own (aiosqlite's surface, fewer hops)."""

    def __init__(
        self, connect: Callable[[], tuple[sqlite3.Connection, bool]], *, busy_ms: int = 0
    ) -> None:
        self._jobs: SimpleQueue[Any] = SimpleQueue()
        self._thread = threading.Thread(
            target=_serve, args=(self._jobs,), name="sqlite", daemon=True
        )
        self._thread.start()
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        # Reads may run on the loop only in WAL mode: in the rollback journal a reader can
        # wait for a writer's lock.
        self._wal = False
        self._begin: str | None = None
        # True while the current transaction (or, outside one, the next statement) may run
        # on the event loop: a deferred transaction that has only read so far, in WAL mode.
        self._reading = False
        # True while the current transaction writes on the event loop: it took the write lock
        # at once (``BEGIN IMMEDIATE`` met no other writer), so none of its statements waits.
        self._writing = False
        self._busy_ms = busy_ms

    async def _open(self) -> Connection:
        self._conn, self._wal = await self._run(self._connect)
        self._reading = self._wal
        return self

    @property
    def _connection(self) -> sqlite3.Connection | None:
        """The open ``sqlite3`` connection (SQLAlchemy's adapter tests it for truth)."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._live().isolation_level

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return self._conn

    async def _run(self, function: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, function))
        return await future

    def begin_with_next(self, statement: str) -> None:
        """Send ``statement`` (a ``BEGIN ...``) with the next one, in the same hop.

        After ``BEGIN DEFERRED`` the transaction's reads run on the event loop; after any
        other mode (``BEGIN IMMEDIATE`` waits for the write lock) every statement goes to
        the thread.
        """
        self._begin = statement
        self._reading = self._wal and statement.upper().split() == ["BEGIN", "DEFERRED"]

    async def _statement(
        self, sql: str, parameters: Any, *, many: bool
    ) -> tuple[list[Any], Description, int, int | None]:
        conn = self._live()
        begin, self._begin = self._begin, None

        def run() -> tuple[list[Any], Description, int, int | None]:
            if begin is not None:
                conn.execute(begin)
            # If the statement fails, the transaction begun with it stays open, as if the
            # BEGIN had been sent alone: SQLAlchemy rolls it back.
            cursor = conn.executemany(sql, parameters) if many else conn.execute(sql, parameters)
            rows = cursor.fetchall() if cursor.description else []
            return rows, cursor.description, cursor.rowcount, cursor.lastrowid

        if self._reading and not many and _READS.match(sql):
            # A read in WAL mode takes no lock that a writer holds, so it never waits on the
            # busy timeout: it runs here, with no hop at all.
            return run()
        if begin is not None or conn.in_transaction:
            self._reading = False  # this transaction writes
        if begin is not None and self._wal and _IMMEDIATE.match(begin) and self._lock_now(begin):
            self._writing = True
            begin = None
        if self._writing:
            return run()
        return await self._run(run)  # the rest of this transaction goes to the thread

    def _lock_now(self, begin: str) -> bool:
        """Send ``begin`` (``BEGIN IMMEDIATE``) here without waiting: True if it took the
        write lock, False if another writer holds it (the transaction then goes to the
        thread, where waiting on the busy timeout blocks nothing else).

        A write transaction of this process that never awaits anything else in between (the
        usual one) runs from ``BEGIN`` to ``COMMIT`` without yielding the loop, so the only
        writers it can meet are another process's, or a transaction of this one that awaits
        something while it holds the lock.
        """
        conn = self._live()
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute(begin)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        return True

    async def _end(self, action: Callable[[], None]) -> None:
        reading, self._reading = self._reading, self._wal
        writing, self._writing = self._writing, False
        if self._begin is not None:
            # BEGIN was never sent: there is no transaction to end.
            self._begin = None
            return
        if not self._live().in_transaction:
            return
        if reading or writing:
            # Ending a transaction that only read releases a snapshot; one that holds the
            # write lock commits without waiting for anyone (WAL mode): no hop either way.
            action()
        else:
            await self._run(action)

    async def commit(self) -> None:
        await self._end(self._live().commit)

    async def rollback(self) -> None:
        await self._end(self._live().rollback)

    def cursor(self) -> Cursor:
        self._live()
        return Cursor(self)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        conn = self._live()
        await self._run(lambda: conn.create_function(*args, **kwargs))

    async def close(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            await self._run(conn.close)
        finally:
            self._jobs.put(_STOP)

    def stop(self) -> None:
        """Close without waiting (SQLAlchemy's terminate, e.g. when the loop is gone)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._jobs.put((_Discard(), _Discard(), conn.close))
        self._jobs.put(_STOP)


class _Discard:
    """Stands in for the loop and the future of a job nobody awaits."""

    def call_soon_threadsafe(self, *_: Any) -> None:
        return None


def _use_wal(conn: sqlite3.Connection, timeout: float) -> bool:
    """Put the database in WAL mode if it is not yet; True when it is in WAL mode.

    The switch needs every other connection gone for a moment, and SQLite answers "database
    is locked" at once, busy timeout or not, when two new connections try it together (the
    first start on a freshly migrated file): so try again until ``timeout``.
    """
    if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bool(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def create_private(path: str) -> None:
    """Create the database file ``path``, readable and writable by its owner only, unless
    it exists.

    SQLite creates a missing file with the process's umask (usually world-readable) and
    gives its -wal and -shm files the database file's mode: an empty file made here first,
    0600, makes all three private. An existing file keeps the mode it has; a file that
    cannot be made here (no such folder) is left to ``sqlite3.connect``, whose error the
    database layer reports as it always did.
    """
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def creator(
    database: str, *, pragmas: Sequence[str], timeout: float, uri: bool = False
) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine``: opens ``database`` in WAL mode (where
    it can: an in-memory database cannot) with ``pragmas``.

    The connection runs in autocommit mode (``isolation_level=None``): transactions begin
    only where SQLAlchemy begins them, with the mode the engine's ``begin`` event chooses.
    """

    def connect() -> tuple[sqlite3.Connection, bool]:
        if not uri and database != ":memory:":
            create_private(database)
        conn = sqlite3.connect(
            database, timeout=timeout, isolation_level=None, check_same_thread=False, uri=uri
        )
        wal = _use_wal(conn, timeout)
        for pragma in pragmas:
            conn.execute(pragma)
        return conn, wal

    async def open_connection() -> Connection:
        return await Connection(connect, busy_ms=round(timeout * 1000))._open()

    return open_connection
