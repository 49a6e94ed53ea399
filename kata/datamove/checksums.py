"""What a table holds, in a form both ends of a move agree on: its row count and a checksum.

The checksum is a SHA-256 over the canonical JSON of every row in primary-key order, equal
on SQLite and PostgreSQL (strings compare byte-wise on both), so the same rows give the
same :class:`TableState` whichever database they were read from.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kata.datamove.tables import BATCH_SIZE


@dataclass(frozen=True)
class TableState:
    """One table's row count and the checksum of its canonical rows in primary-key order."""

    rows: int
    checksum: str

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "checksum": self.checksum}


Summary = dict[str, TableState]
"""Table name -> state, in dependency order."""


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


async def read_rows(
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
        async for batch in read_rows(conn, table, batch_size):
            for row in batch:
                digest.update(_row_line(table, row))
            count += len(batch)
        summary[table.name] = TableState(count, digest.hexdigest())
    return summary


def differences(left: Summary, right: Mapping[str, TableState]) -> list[str]:
    return [name for name in left if left[name] != right.get(name)]


def is_empty(summary: Summary) -> bool:
    return all(state.rows == 0 for state in summary.values())


def table_text(
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
