"""Copying a context's tables inside the target's one transaction, then verifying the copy.

Rows are copied in batches, in dependency order; then every integer key's next generated
id is moved past the copied ones, and each table's count and checksum must equal the
source's, or everything is rolled back.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from kata.datamove.checksums import Summary, differences, read_rows, summarize, table_text
from kata.datamove.tables import AfterTable, DataMoveError, Progress


async def empty_tables(conn: AsyncConnection, tables: Sequence[Table]) -> None:
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
        async for batch in read_rows(source, table, batch_size):
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


async def copy_verified(
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
    different = differences(expected, copied)
    if different:
        names = [table.name for table in tables]
        raise DataMoveError(
            table_text(
                f"{what}: the copy does not match the source in {', '.join(different)};"
                " rolled back, nothing was changed",
                [("source rows", expected), ("copied rows", copied)],
                names,
            )
        )
    return copied
