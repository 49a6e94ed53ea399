"""The forward move: a context's rows from the monolith's database to its service's.

See kata/data.py for every case. Nothing is ever lost: the target is written in ONE
transaction, verified, and recorded in its ledger; the monolith keeps its copy (the
rollback point, kata/datamove/rollback.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kata.datamove.checksums import Summary, differences, is_empty, summarize, table_text
from kata.datamove.connections import (
    create_if_missing,
    database_exists,
    describe_url,
    migrate,
    normalised,
    open_engine,
    prepare_existing,
    same_database,
    snapshot,
    writing,
)
from kata.datamove.copying import copy_verified, empty_tables
from kata.datamove.ledger import LedgerEntry, ensure_ledger, ledger_entry, record_move
from kata.datamove.tables import BATCH_SIZE, AfterTable, DataMoveError, Progress, say, tables_of


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


async def move_context(
    context: str,
    *,
    source: str,
    target: str,
    replace: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress = say,
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
    source = normalised(source, "source")
    target = normalised(target, "target")
    if same_database(source, target):
        raise DataMoveError(f"the source and the target are the same database: {source}")
    if not await database_exists(source):
        raise DataMoveError(
            f"the source database {describe_url(source)} does not exist: there is nothing to"
            " move (run the monolith's step first, or name the right database)"
        )
    await create_if_missing(target)
    label = describe_url(source)
    progress(f"{context}: {label} -> {describe_url(target)}")
    async with open_engine(source) as source_engine, open_engine(target) as target_engine:
        await prepare_existing(source_engine, source, context, "source", progress)
        await migrate(target, context)
        await ensure_ledger(target_engine)
        async with snapshot(source_engine) as read:
            before = await summarize(read, tables, batch_size=batch_size)
            async with writing(target_engine, context) as write:
                entry = await ledger_entry(write, context)
                if entry is not None:
                    return _already_moved(context, entry, before, names, replace, progress)
                present = await summarize(write, tables, batch_size=batch_size)
                if not is_empty(present):
                    if present == before:
                        moved_at = await record_move(write, context, label, before)
                        progress(
                            table_text(
                                f"{context}: the target already holds exactly the source's"
                                " rows; recorded the move, copied nothing",
                                [("source rows", before), ("target rows", present)],
                                names,
                            )
                        )
                        return Move(context, "recorded", before, present, moved_at)
                    if is_empty(before):
                        moved_at = await record_move(write, context, label, before)
                        progress(
                            f"{context}: the source has no {context} rows, nothing to move;"
                            " the target keeps its own rows; recorded"
                        )
                        return Move(context, "nothing to move", before, present, moved_at)
                    different = differences(before, present)
                    if not replace:
                        raise DataMoveError(
                            table_text(
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
                    await empty_tables(write, tables)
                copied = await copy_verified(
                    read,
                    write,
                    tables,
                    before,
                    batch_size=batch_size,
                    progress=progress,
                    after_table=after_table,
                    what=context,
                )
                moved_at = await record_move(write, context, label, before)
    action = "replaced" if not is_empty(present) else "moved"
    progress(
        table_text(
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
    changed = differences(now, entry.tables)
    progress(
        table_text(
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
