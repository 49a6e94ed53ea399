"""Data moves with the context: ``python -m kata migrate-data``.

When a kata step extracts a context (``kata.steps.step(N).extracts``), the service that now
serves it starts on a database of its own, while the context's rows are still in the
monolith's. This command moves them, for every context the step extracts::

    python -m kata migrate-data --step 2                     # var/kata/monolith.db -> catalog.db
    python -m kata migrate-data --step 2 --database postgres # shopkata_kata_monolith -> ..catalog
    python -m kata migrate-data --step 2 --reverse           # the rollback: back to the monolith
    python -m kata migrate-data --context catalog --source URL --target URL  # other layouts

The databases are the ones ``make up STEP=N`` runs on: the launcher's with the data name
``kata`` (``launcher.databases.service_urls``, the very function the launcher calls).

A forward move, per context:

1. migrates the target (that context's Alembic stream only), and the source's stream too
   when it is behind; a source that is missing or has none of the context's tables is an
   error;
2. copies every table of the context's metadata in dependency order, in batches, inside
   ONE target transaction, reading the source from one snapshot;
3. moves PostgreSQL sequences past the copied ids (SQLite gives ``max(id) + 1`` by itself),
   so the service's next insert never collides;
4. verifies each table (row count, and a checksum of canonical row values in primary-key
   order, equal on SQLite and PostgreSQL), and rolls everything back on any difference;
5. records the move in the target's ledger table ``kata_data_moves`` (context, source,
   time, each table's count and checksum at move time), in the same transaction.

It never loses data. A rerun finds the ledger, changes nothing, and checks that the
monolith's copy still matches what was moved (a loud warning otherwise: someone wrote to
it after the move). A target that already holds the same rows is recorded as moved; one
that holds other rows is refused, naming the tables, unless ``--replace`` (delete them and
copy, in the same single transaction).

**The monolith's copy stays in place after a forward move**: it is the rollback point, and
nothing in the monolith reads it once the context is served elsewhere.

``--reverse`` is the rollback: it moves the service's rows back into the monolith's
database, replacing the monolith's copy only if that copy still equals what the ledger
recorded (nobody wrote to it since; otherwise it refuses unless ``--replace``), verifies,
then empties the service's tables of that context and removes the ledger entry, so that a
later forward move starts clean. Stop the deployment before moving data either way.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Column,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kata import steps
from launcher import control, databases
from launcher.databases import DatabaseSetupError
from shop.cart import models as cart_models
from shop.catalog import models as catalog_models
from shop.identity import models as identity_models
from shop.inventory import models as inventory_models
from shop.kernel.db import UtcDateTime, create_engine, normalise_url, utcnow
from shop.kernel.migrations import alembic_config, upgrade, version_table
from shop.kernel.topology import load as load_topology
from shop.orders import models as orders_models
from shop.payments import models as payments_models

__all__ = [
    "BATCH_SIZE",
    "LEDGER",
    "LEDGER_TABLE",
    "DataMoveError",
    "LedgerEntry",
    "Move",
    "Summary",
    "TableState",
    "add_command",
    "describe_url",
    "ledger_entry",
    "move_back",
    "move_context",
    "step_urls",
    "summarize",
    "tables_of",
]

LEDGER_TABLE = "kata_data_moves"
BATCH_SIZE = 500
REPO = Path(__file__).resolve().parent.parent

METADATA: dict[str, MetaData] = {
    "identity": identity_models.Base.metadata,
    "catalog": catalog_models.Base.metadata,
    "inventory": inventory_models.Base.metadata,
    "cart": cart_models.Base.metadata,
    "orders": orders_models.Base.metadata,
    "payments": payments_models.Base.metadata,
}
"""Each context's own tables, as its ``models`` module declares them."""

_LEDGER_METADATA = MetaData()
LEDGER = Table(
    LEDGER_TABLE,
    _LEDGER_METADATA,
    Column("context", String(64), primary_key=True),
    Column("source", Text, nullable=False),
    Column("moved_at", UtcDateTime, nullable=False),
    Column("tables", JSON, nullable=False),
)
"""One row per context moved into this database: where from, when, and what was moved."""

Progress = Callable[[str], None]
AfterTable = Callable[[str, AsyncConnection], Awaitable[None]]


class DataMoveError(RuntimeError):
    """The move cannot go on, or did not verify; the message says why and what to do.
    Nothing was changed in the database being written."""


@dataclass(frozen=True)
class TableState:
    """One table's row count and the checksum of its canonical rows in primary-key order."""

    rows: int
    checksum: str

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "checksum": self.checksum}


Summary = dict[str, TableState]
"""Table name -> state, in dependency order."""


@dataclass(frozen=True)
class LedgerEntry:
    context: str
    source: str
    moved_at: datetime
    tables: Summary


@dataclass(frozen=True)
class Move:
    """What one context's move did."""

    context: str
    action: str
    """``moved``, ``replaced``, ``recorded``, ``already moved``, ``moved back``, ..."""
    source: Summary
    target: Summary
    moved_at: datetime | None = None
    warnings: tuple[str, ...] = field(default=())


def _say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- checksums


def _canonical(value: Any, column: Column[Any]) -> Any:
    """A value as the same JSON-able thing whatever the database it was read from."""
    if value is None:
        return None
    if isinstance(column.type, JSON):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return _canonical(value.value, column)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _row_line(table: Table, row: Sequence[Any]) -> bytes:
    values = [_canonical(value, column) for value, column in zip(row, table.columns, strict=True)]
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _ordered(table: Table, dialect: str) -> Any:
    """``SELECT *`` in primary-key order, the same order on SQLite and PostgreSQL (strings
    compare byte-wise on both: PostgreSQL's "C" collation)."""
    keys: list[Any] = []
    for column in table.primary_key.columns:
        if dialect == "postgresql" and isinstance(column.type, String):
            keys.append(column.collate("C"))
        else:
            keys.append(column)
    return select(table).order_by(*keys)


async def _rows(
    conn: AsyncConnection, table: Table, batch_size: int
) -> AsyncIterator[Sequence[Any]]:
    result = await conn.stream(_ordered(table, conn.dialect.name))
    async for batch in result.partitions(batch_size):
        yield batch


async def summarize(
    conn: AsyncConnection, tables: Sequence[Table], *, batch_size: int = BATCH_SIZE
) -> Summary:
    """Each table's count and checksum, read through ``conn`` (its transaction's snapshot)."""
    summary: Summary = {}
    for table in tables:
        digest = hashlib.sha256(json.dumps([c.name for c in table.columns]).encode())
        count = 0
        async for batch in _rows(conn, table, batch_size):
            for row in batch:
                digest.update(_row_line(table, row))
            count += len(batch)
        summary[table.name] = TableState(count, digest.hexdigest())
    return summary


def _differences(left: Summary, right: Mapping[str, TableState]) -> list[str]:
    return [name for name in left if left[name] != right.get(name)]


def _empty(summary: Summary) -> bool:
    return all(state.rows == 0 for state in summary.values())


def _table_text(
    title: str, columns: Sequence[tuple[str, Mapping[str, TableState]]], names: Sequence[str]
) -> str:
    """The per-table counts and checksums of each side, and whether they agree."""
    head = f"  {'table':<24}" + "".join(f" {label:>12} {'checksum':<16}" for label, _ in columns)
    lines = [title, head]
    for name in names:
        states = [summary.get(name) for _, summary in columns]
        cells = "".join(
            f" {state.rows if state else '-':>12} {state.checksum[:16] if state else '-':<16}"
            for state in states
        )
        same = all(state == states[0] for state in states)
        lines.append(f"  {name:<24}{cells} {'ok' if same else 'DIFFERENT'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- databases


def tables_of(context: str) -> list[Table]:
    """The context's tables in dependency order (a table after those it references)."""
    if context not in METADATA:
        raise DataMoveError(f"unknown context {context!r}; expected one of {', '.join(METADATA)}")
    return list(METADATA[context].sorted_tables)


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


def _same_database(first: str, second: str) -> bool:
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


async def _exists(url: str) -> bool:
    path = _sqlite_path(url)
    if path is not None:
        return path.is_file()
    return await _postgres_exists(url)


async def _create_if_missing(url: str) -> None:
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    server = make_url(url).set(database="postgres").render_as_string(hide_password=False)
    await databases.ensure_postgres_databases_async(server, {"target": url})


def _normalised(url: str, role: str) -> str:
    try:
        return normalise_url(url)
    except (ValueError, SQLAlchemyError) as exc:
        raise DataMoveError(f"the {role} database URL {url!r} is not usable: {exc}") from exc


async def _context_tables(engine: AsyncEngine, context: str) -> tuple[set[str], str | None]:
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


async def _migrate(url: str, context: str) -> None:
    # Alembic runs its own event loop: off this one.
    await asyncio.to_thread(upgrade, url, [context])


async def _prepare_existing(
    engine: AsyncEngine, url: str, context: str, role: str, progress: Progress
) -> None:
    """The context's tables must be there; its stream is brought to head if it is behind."""
    names, revision = await _context_tables(engine, context)
    missing = [table.name for table in tables_of(context) if table.name not in names]
    if missing:
        raise DataMoveError(
            f"the {role} database {describe_url(url)} has no {context} tables"
            f" ({', '.join(missing)} missing): is it the right database? Nothing was changed."
        )
    if revision is not None and revision != _head(context, url):
        progress(f"{context}: migrating the {role}'s {context} stream from {revision} to head")
        await _migrate(url, context)


@asynccontextmanager
async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def _snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read transaction that sees one snapshot of the database for all its queries."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


@asynccontextmanager
async def _writing(engine: AsyncEngine, context: str) -> AsyncIterator[AsyncConnection]:
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


async def _ensure_ledger(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: _LEDGER_METADATA.create_all(sync, checkfirst=True))


async def ledger_entry(conn: AsyncConnection, context: str) -> LedgerEntry | None:
    """The recorded move of ``context`` into this database, if any."""
    row = (await conn.execute(select(LEDGER).where(LEDGER.c.context == context))).first()
    if row is None:
        return None
    tables = {
        name: TableState(int(state["rows"]), str(state["checksum"]))
        for name, state in dict(row.tables).items()
    }
    return LedgerEntry(row.context, row.source, row.moved_at, tables)


async def _record(conn: AsyncConnection, context: str, source: str, summary: Summary) -> datetime:
    moved_at = utcnow()
    await conn.execute(delete(LEDGER).where(LEDGER.c.context == context))
    await conn.execute(
        LEDGER.insert().values(
            context=context,
            source=source,
            moved_at=moved_at,
            tables={name: state.as_json() for name, state in summary.items()},
        )
    )
    return moved_at


# --------------------------------------------------------------------------- copying


async def _empty_tables(conn: AsyncConnection, tables: Sequence[Table]) -> None:
    for table in reversed(tables):  # dependents first
        await conn.execute(delete(table))


async def _copy(
    source: AsyncConnection,
    target: AsyncConnection,
    tables: Sequence[Table],
    expected: Summary,
    *,
    batch_size: int,
    progress: Progress,
    after_table: AfterTable | None,
) -> None:
    for table in tables:
        total = expected[table.name].rows
        copied = 0
        async for batch in _rows(source, table, batch_size):
            await target.execute(table.insert(), [dict(row._mapping) for row in batch])
            copied += len(batch)
            if copied < total:
                progress(f"  {table.name}: {copied}/{total} rows")
        progress(f"  {table.name}: {copied} rows copied")
        if after_table is not None:
            await after_table(table.name, target)


async def _next_ids(conn: AsyncConnection, tables: Sequence[Table]) -> list[str]:
    """Make the next generated id of each integer key come after the copied ones.

    PostgreSQL: a SERIAL/IDENTITY column's sequence is moved forward (never back) past the
    highest id. SQLite: an INTEGER PRIMARY KEY gives ``max(rowid) + 1`` by itself; a table
    declared AUTOINCREMENT keeps a floor in ``sqlite_sequence``, raised here if it is lower.
    Returns "table: next id N" lines.
    """
    notes = []
    postgres = conn.dialect.name == "postgresql"
    preparer = conn.dialect.identifier_preparer
    for table in tables:
        column = table.autoincrement_column
        if column is None:
            continue
        highest = (await conn.execute(select(func.max(column)))).scalar()
        top = int(highest or 0)
        if postgres:
            sequence = (
                await conn.execute(
                    text("SELECT pg_get_serial_sequence(:table, :column)"),
                    {"table": preparer.quote(table.name), "column": column.name},
                )
            ).scalar()
            if sequence is None:
                continue
            row = (
                await conn.execute(
                    text(f"SELECT last_value, is_called FROM {sequence}")  # noqa: S608 (from PG)
                )
            ).one()
            following = int(row.last_value) + 1 if row.is_called else int(row.last_value)
            if following <= top:
                await conn.execute(
                    text("SELECT setval(:sequence, :value, true)"),
                    {"sequence": sequence, "value": top},
                )
                following = top + 1
        else:
            following = top + 1
            has_sequence = (
                await conn.execute(
                    text(
                        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='sqlite_sequence'"
                    )
                )
            ).first()
            if has_sequence is not None:
                floor = (
                    await conn.execute(
                        text("SELECT seq FROM sqlite_sequence WHERE name = :name"),
                        {"name": table.name},
                    )
                ).scalar()
                if floor is not None and int(floor) < top:
                    await conn.execute(
                        text("UPDATE sqlite_sequence SET seq = :top WHERE name = :name"),
                        {"top": top, "name": table.name},
                    )
                elif floor is not None:
                    following = int(floor) + 1
        notes.append(f"{table.name} {following}")
    return notes


async def _copy_verified(
    source: AsyncConnection,
    target: AsyncConnection,
    tables: Sequence[Table],
    expected: Summary,
    *,
    batch_size: int,
    progress: Progress,
    after_table: AfterTable | None,
    what: str,
) -> Summary:
    """Copy, fix the next ids, verify against ``expected``; raise (so the caller's single
    transaction rolls back) on any difference."""
    await _copy(
        source,
        target,
        tables,
        expected,
        batch_size=batch_size,
        progress=progress,
        after_table=after_table,
    )
    notes = await _next_ids(target, tables)
    if notes:
        progress(f"  next ids: {', '.join(notes)}")
    copied = await summarize(target, tables, batch_size=batch_size)
    different = _differences(expected, copied)
    if different:
        names = [table.name for table in tables]
        raise DataMoveError(
            _table_text(
                f"{what}: the copy does not match the source in {', '.join(different)};"
                " rolled back, nothing was changed",
                [("source rows", expected), ("copied rows", copied)],
                names,
            )
        )
    return copied


# --------------------------------------------------------------------------- the moves


async def move_context(
    context: str,
    *,
    source: str,
    target: str,
    replace: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _say,
    after_table: AfterTable | None = None,
) -> Move:
    """Move ``context``'s rows from ``source`` (the monolith's database) to ``target`` (the
    service's). See the module's docstring for every case; raises :class:`DataMoveError`
    with nothing changed when the move cannot be made or does not verify.

    ``after_table`` is awaited after each table is copied, inside the target's transaction
    (tests use it to fail or tamper half-way).
    """
    tables = tables_of(context)
    names = [table.name for table in tables]
    source = _normalised(source, "source")
    target = _normalised(target, "target")
    if _same_database(source, target):
        raise DataMoveError(f"the source and the target are the same database: {source}")
    if not await _exists(source):
        raise DataMoveError(
            f"the source database {describe_url(source)} does not exist: there is nothing to"
            " move (run the monolith's step first, or name the right database)"
        )
    await _create_if_missing(target)
    label = describe_url(source)
    progress(f"{context}: {label} -> {describe_url(target)}")
    async with _engine(source) as source_engine, _engine(target) as target_engine:
        await _prepare_existing(source_engine, source, context, "source", progress)
        await _migrate(target, context)
        await _ensure_ledger(target_engine)
        async with _snapshot(source_engine) as read:
            before = await summarize(read, tables, batch_size=batch_size)
            async with _writing(target_engine, context) as write:
                entry = await ledger_entry(write, context)
                if entry is not None:
                    return _already_moved(context, entry, before, names, replace, progress)
                present = await summarize(write, tables, batch_size=batch_size)
                if not _empty(present):
                    if present == before:
                        moved_at = await _record(write, context, label, before)
                        progress(
                            _table_text(
                                f"{context}: the target already holds exactly the source's"
                                " rows; recorded the move, copied nothing",
                                [("source rows", before), ("target rows", present)],
                                names,
                            )
                        )
                        return Move(context, "recorded", before, present, moved_at)
                    if _empty(before):
                        moved_at = await _record(write, context, label, before)
                        progress(
                            f"{context}: the source has no {context} rows, nothing to move;"
                            " the target keeps its own rows; recorded"
                        )
                        return Move(context, "nothing to move", before, present, moved_at)
                    different = _differences(before, present)
                    if not replace:
                        raise DataMoveError(
                            _table_text(
                                f"{context}: the target already holds other {context} rows and"
                                f" no move is recorded there; differing tables:"
                                f" {', '.join(different)}. Nothing was changed. If the"
                                " target's rows are disposable, rerun with --replace to"
                                " delete them and copy the source's.",
                                [("source rows", before), ("target rows", present)],
                                names,
                            )
                        )
                    progress(f"{context}: --replace: deleting the target's {context} rows")
                    await _empty_tables(write, tables)
                copied = await _copy_verified(
                    read,
                    write,
                    tables,
                    before,
                    batch_size=batch_size,
                    progress=progress,
                    after_table=after_table,
                    what=context,
                )
                moved_at = await _record(write, context, label, before)
    action = "replaced" if not _empty(present) else "moved"
    progress(
        _table_text(
            f"{context}: {action} and verified at {moved_at.isoformat()}; the source keeps its"
            " copy (the rollback point)",
            [("source rows", before), ("target rows", copied)],
            names,
        )
    )
    return Move(context, action, before, copied, moved_at)


def _already_moved(
    context: str,
    entry: LedgerEntry,
    now: Summary,
    names: Sequence[str],
    replace: bool,
    progress: Progress,
) -> Move:
    changed = _differences(now, entry.tables)
    progress(
        _table_text(
            f"{context}: already moved at {entry.moved_at.isoformat()} from {entry.source};"
            " nothing changed",
            [("recorded rows", entry.tables), ("source now", now)],
            names,
        )
    )
    warnings: list[str] = []
    if changed:
        warnings.append(
            f"WARNING: the monolith's copy of {context} changed since it was moved at"
            f" {entry.moved_at.isoformat()} ({', '.join(changed)}): someone wrote to it after"
            f" the move (the monolith served {context} again?). Those writes are NOT in the"
            f" service. To bring them over: `--reverse --replace` puts the service's rows back"
            f" over them, or rerun forward after `--reverse` once you have reconciled both."
        )
    if replace:
        warnings.append(
            "note: --replace does nothing once a move is recorded; `--reverse` undoes it first"
        )
    for warning in warnings:
        progress(warning)
    return Move(context, "already moved", entry.tables, now, entry.moved_at, tuple(warnings))


async def move_back(
    context: str,
    *,
    source: str,
    target: str,
    replace: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _say,
    after_table: AfterTable | None = None,
) -> Move:
    """The rollback of :func:`move_context`: move ``context``'s rows from ``target`` (the
    service's database) back into ``source`` (the monolith's), with the same arguments as
    the forward move.

    The monolith's copy is replaced only if it still equals what the ledger recorded (or
    holds no rows), unless ``replace``. Once the monolith's transaction is committed and
    verified, the service's tables of the context are emptied and the ledger entry removed,
    in one transaction, so a later forward move starts clean.
    """
    tables = tables_of(context)
    names = [table.name for table in tables]
    monolith = _normalised(source, "source")
    service = _normalised(target, "target")
    if _same_database(monolith, service):
        raise DataMoveError(f"the source and the target are the same database: {monolith}")
    for url, role in ((service, "service's (target)"), (monolith, "monolith's (source)")):
        if not await _exists(url):
            raise DataMoveError(
                f"the {role} database {describe_url(url)} does not exist: nothing to move back"
            )
    progress(f"{context}: {describe_url(service)} -> {describe_url(monolith)} (reverse)")
    async with _engine(monolith) as monolith_engine, _engine(service) as service_engine:
        await _prepare_existing(service_engine, service, context, "service", progress)
        await _prepare_existing(monolith_engine, monolith, context, "monolith", progress)
        await _ensure_ledger(service_engine)
        async with _snapshot(service_engine) as read:
            entry = await ledger_entry(read, context)
            rows = await summarize(read, tables, batch_size=batch_size)
            async with _writing(monolith_engine, context) as write:
                stale = await summarize(write, tables, batch_size=batch_size)
                if entry is None and _empty(rows) and stale != rows:
                    progress(
                        f"{context}: the service holds no {context} rows and no move is"
                        " recorded: nothing to move back (already rolled back?); nothing"
                        " changed"
                    )
                    return Move(context, "nothing to move back", rows, stale)
                if stale == rows:
                    progress(f"{context}: the monolith already holds the service's rows")
                    copied = stale
                else:
                    reason = _reverse_refusal(context, entry, rows, stale)
                    if reason and not replace:
                        raise DataMoveError(
                            _table_text(
                                f"{context}: refusing to overwrite the monolith's rows:"
                                f" {reason}. Nothing was changed. --replace overwrites"
                                " them with the service's rows.",
                                [("service rows", rows), ("monolith rows", stale)]
                                + ([("recorded rows", entry.tables)] if entry else []),
                                names,
                            )
                        )
                    await _empty_tables(write, tables)
                    copied = await _copy_verified(
                        read,
                        write,
                        tables,
                        rows,
                        batch_size=batch_size,
                        progress=progress,
                        after_table=after_table,
                        what=f"{context} (reverse)",
                    )
        # The monolith holds the rows, verified and committed: now the service lets go.
        async with _writing(service_engine, context) as write:
            now = await summarize(write, tables, batch_size=batch_size)
            if now != rows:
                raise DataMoveError(
                    f"{context}: the service's rows changed while they were moved back"
                    f" ({', '.join(_differences(now, rows))}): is the service still running?"
                    " The monolith holds the rows as they were read; the service's rows and"
                    " its ledger entry were left as they are. Stop the service and rerun"
                    " with --reverse --replace."
                )
            await _empty_tables(write, tables)
            await write.execute(delete(LEDGER).where(LEDGER.c.context == context))
    progress(
        _table_text(
            f"{context}: moved back and verified; the service's {context} tables were emptied"
            " and its ledger entry removed",
            [("service rows", rows), ("monolith rows", copied)],
            names,
        )
    )
    return Move(context, "moved back", rows, copied, None)


def _reverse_refusal(
    context: str, entry: LedgerEntry | None, rows: Summary, stale: Summary
) -> str | None:
    """Why the monolith's rows may not simply be replaced by the service's, if they may not."""
    if _empty(stale):
        return None  # nothing there to lose
    if _empty(rows):
        return (
            f"the service holds no {context} rows although a move is recorded, and that would"
            " empty the monolith's copy"
        )
    if entry is None:
        return (
            f"no move of {context} is recorded in the service's database, so the monolith's"
            " rows cannot be shown to be an untouched copy"
        )
    if stale != entry.tables:
        return (
            f"the monolith's copy changed since the move at {entry.moved_at.isoformat()}"
            f" ({', '.join(_differences(stale, entry.tables))}): someone wrote to it"
        )
    return None


# --------------------------------------------------------------------------- kata steps


def step_urls(
    number: int | str,
    choice: str,
    *,
    data: str = steps.DATA_NAME,
    folder: Path | None = None,
) -> dict[str, tuple[str, str]]:
    """For each context step ``number`` extracts: (the monolith's URL, its new service's
    URL), exactly as ``python -m launcher up --data <data>`` names them."""
    step = steps.step(number)
    topology = load_topology(REPO / step.topology)
    pairs = {}
    for context in step.extracts:
        service = topology.owner(context).name
        urls = databases.service_urls(data, [steps.MONOLITH, service], choice, folder=folder)
        pairs[context] = (urls[steps.MONOLITH], urls[service])
    return pairs


async def _run(args: argparse.Namespace) -> int:
    explicit = [args.context, args.source, args.target]
    if args.step is not None:
        if any(explicit):
            raise _Usage("--step cannot be combined with --context/--source/--target")
        folder = Path(args.data_dir) if args.data_dir else None
        step = steps.step(args.step)
        if args.up_to and args.reverse:
            raise _Usage("--up-to is for forward moves only; reverse one step at a time")
        pairs = {}
        for number in range(step.number + 1) if args.up_to else [step.number]:
            pairs.update(step_urls(number, args.database, data=args.data, folder=folder))
        if not pairs:
            upto = "up to " if args.up_to else ""
            _say(f"step {upto}{step.number} ({step.title}) extracts no context: no data to move")
            return 0
        live = control.running(args.data)
        if live is not None:
            # Rows written while they move would be left behind, or moved twice.
            raise DataMoveError(
                f"a deployment runs on these databases (its launcher answers on {live}):"
                f" stop it first (`python -m launcher down --data {args.data}`), then move"
                " the data"
            )
    elif all(explicit):
        if args.up_to:
            raise _Usage("--up-to goes with --step")
        tables_of(args.context)
        pairs = {args.context: (args.source, args.target)}
    else:
        raise _Usage("give --step N, or all of --context, --source and --target")
    contexts = list(pairs)
    if args.reverse:
        contexts.reverse()
    warned = False
    for context in contexts:
        source, target = pairs[context]
        if args.if_present and args.reverse and not await _exists(_normalised(target, "target")):
            _say(f"{context}: {describe_url(target)} does not exist: nothing to move back")
            continue
        if args.if_present and not args.reverse and not await _source_present(source, context):
            _say(
                f"{context}: {describe_url(source)} does not hold the monolith's {context}"
                " tables yet (a fresh start): nothing to move"
            )
            continue
        run = move_back if args.reverse else move_context
        result = await run(
            context, source=source, target=target, replace=args.replace, batch_size=args.batch_size
        )
        warned = warned or bool(result.warnings)
    if warned:
        _say("finished, with the WARNING above")
    return 0


async def _source_present(url: str, context: str) -> bool:
    url = _normalised(url, "source")
    if not await _exists(url):
        return False
    async with _engine(url) as engine:
        names, _ = await _context_tables(engine, context)
    return all(table.name in names for table in tables_of(context))


class _Usage(ValueError):
    """The arguments do not make sense together."""


def _command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except _Usage as exc:
        print(f"usage error: {exc} (see --help)", file=sys.stderr, flush=True)
        return 2
    except (DataMoveError, DatabaseSetupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except (SQLAlchemyError, OSError, asyncpg.PostgresError) as exc:
        print(f"error: the database failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


HELP = f"""\
Move the rows of the contexts a kata step extracts from the monolith's database to the
new service's database, verified (row counts and checksums per table), in one transaction
per context, recorded in the target's {LEDGER_TABLE} table so a rerun changes nothing.

The databases are those `make up STEP=N` runs on (`python -m launcher up --data kata`):
SQLite var/kata/monolith.db -> var/kata/<service>.db, or PostgreSQL shopkata_kata_monolith
-> shopkata_kata_<service>. Stop the deployment before moving data.

The monolith's copy stays in place after a forward move: it is the rollback point.
--reverse is the rollback: the service's rows go back into the monolith's database (whose
copy must be untouched since the move, unless --replace), then the service's tables of the
context are emptied and the ledger entry removed.
"""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate-data`` to ``python -m kata``."""
    parser = subparsers.add_parser(
        "migrate-data",
        help="move an extracted context's rows from the monolith's database to its service's",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--step", default=None, help=f"the kata step, 0..{steps.LAST}")
    parser.add_argument(
        "--database",
        default=databases_default(),
        help="sqlite (default), postgres, or a postgresql:// server URL (env SHOP_DATABASE),"
        " as for `python -m launcher up`",
    )
    parser.add_argument(
        "--data",
        default=steps.DATA_NAME,
        help=f"the launcher's data name (default {steps.DATA_NAME}: var/{steps.DATA_NAME}/,"
        f" shopkata_{steps.DATA_NAME}_<service>)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"folder of the SQLite databases (default var/<data>, i.e. var/{steps.DATA_NAME})",
    )
    parser.add_argument("--context", default=None, help="with --source and --target: one context")
    parser.add_argument("--source", default=None, help="the monolith's database URL")
    parser.add_argument("--target", default=None, help="the service's database URL")
    parser.add_argument(
        "--reverse",
        action="store_true",
        help="the rollback: move the service's rows back into the monolith's database",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="overwrite rows the written database holds that differ and are not recorded as"
        " moved (forward: the service's; --reverse: the monolith's changed copy)",
    )
    parser.add_argument(
        "--up-to",
        action="store_true",
        help="with --step N: the contexts of every step up to N, in step order (a jump from"
        " step 0 to step 4 moves catalog, identity and inventory; moved ones are left as they"
        " are); what `make up` uses",
    )
    parser.add_argument(
        "--if-present",
        action="store_true",
        help="do nothing (exit 0) when the monolith's database does not exist or lacks the"
        " context's tables (with --reverse: when the service's database does not exist): a"
        " fresh start has nothing to move (what `make up` uses)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=BATCH_SIZE, help="rows per insert batch"
    )
    parser.set_defaults(run=_command)


def databases_default() -> str:
    """The launcher's default ``--database``: ``SHOP_DATABASE`` or sqlite."""
    return os.environ.get("SHOP_DATABASE", "sqlite")
