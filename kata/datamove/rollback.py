"""The rollback (``--reverse``): a context's rows from its service's database back into the
monolith's, replacing the monolith's copy only while it is untouched since the move."""

from __future__ import annotations

from sqlalchemy import delete

from kata.datamove.checksums import Summary, differences, is_empty, summarize, table_text
from kata.datamove.connections import (
    database_exists,
    describe_url,
    normalised,
    open_engine,
    prepare_existing,
    same_database,
    snapshot,
    writing,
)
from kata.datamove.copying import copy_verified, empty_tables
from kata.datamove.ledger import LEDGER, LedgerEntry, ensure_ledger, ledger_entry
from kata.datamove.moves import Move
from kata.datamove.tables import BATCH_SIZE, AfterTable, DataMoveError, Progress, say, tables_of


async def move_back(
    context: str,
    *,
    source: str,
    target: str,
    replace: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress = say,
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
    monolith = normalised(source, "source")
    service = normalised(target, "target")
    if same_database(monolith, service):
        raise DataMoveError(f"the source and the target are the same database: {monolith}")
    for url, role in ((service, "service's (target)"), (monolith, "monolith's (source)")):
        if not await database_exists(url):
            raise DataMoveError(
                f"the {role} database {describe_url(url)} does not exist: nothing to move back"
            )
    progress(f"{context}: {describe_url(service)} -> {describe_url(monolith)} (reverse)")
    async with open_engine(monolith) as monolith_engine, open_engine(service) as service_engine:
        await prepare_existing(service_engine, service, context, "service", progress)
        await prepare_existing(monolith_engine, monolith, context, "monolith", progress)
        await ensure_ledger(service_engine)
        async with snapshot(service_engine) as read:
            entry = await ledger_entry(read, context)
            rows = await summarize(read, tables, batch_size=batch_size)
            async with writing(monolith_engine, context) as write:
                stale = await summarize(write, tables, batch_size=batch_size)
                if entry is None and is_empty(rows) and stale != rows:
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
                            table_text(
                                f"{context}: refusing to overwrite the monolith's rows:"
                                f" {reason}. Nothing was changed. --replace overwrites"
                                " them with the service's rows.",
                                [("service rows", rows), ("monolith rows", stale)]
                                + ([("recorded rows", entry.tables)] if entry else []),
                                names,
                            )
                        )
                    await empty_tables(write, tables)
                    copied = await copy_verified(
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
        async with writing(service_engine, context) as write:
            now = await summarize(write, tables, batch_size=batch_size)
            if now != rows:
                raise DataMoveError(
                    f"{context}: the service's rows changed while they were moved back"
                    f" ({', '.join(differences(now, rows))}): is the service still running?"
                    " The monolith holds the rows as they were read; the service's rows and"
                    " its ledger entry were left as they are. Stop the service and rerun"
                    " with --reverse --replace."
                )
            await empty_tables(write, tables)
            await write.execute(delete(LEDGER).where(LEDGER.c.context == context))
    progress(
        table_text(
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
    if is_empty(stale):
        return None  # nothing there to lose
    if is_empty(rows):
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
            f" ({', '.join(differences(stale, entry.tables))}): someone wrote to it"
        )
    return None
