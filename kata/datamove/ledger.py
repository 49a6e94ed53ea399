"""The ledger of moves (table ``kata_data_moves``, in the database moved into): one row per
context moved there, with its source, its time, and each table's count and checksum then.
It is written in the same transaction as the rows it records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, Column, MetaData, String, Table, Text, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kata.datamove.checksums import Summary, TableState
from shop.kernel.db import UtcDateTime, utcnow

LEDGER_TABLE = "kata_data_moves"

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


@dataclass(frozen=True)
class LedgerEntry:
    context: str
    source: str
    moved_at: datetime
    tables: Summary


async def ensure_ledger(engine: AsyncEngine) -> None:
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


async def record_move(
    conn: AsyncConnection, context: str, source: str, summary: Summary
) -> datetime:
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
