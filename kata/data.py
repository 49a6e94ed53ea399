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

**A step that backfills** (step 7, from calls to events) extracts no context: its services
are step 6's, on the same databases. What it adds are read models, catalog's of inventory's
stock and the cart's of catalog's products, which its topology's broker keeps from then on
(``composition.backfill.feeds`` finds them in the topology, as the composition root binds
them). So its move builds each read model in the consumer's database from the provider's
(``catalog.db`` from ``inventory.db``, ``cart.db`` from ``catalog.db``): the provider's
snapshot, read in one transaction, delivered through the consumer's own event handlers at
the provider's last outbox position (a later event wins, an older one still queued loses),
then every aggregate's answer compared with the provider's (an error names the first ids
that differ). A rerun finds the models answering as their providers do and changes nothing.
``--reverse`` for such a step leaves the read models in place and says so: the step before
it reads none of them, and the next forward run brings them up to date.

This module is the command; the moves themselves are in kata/datamove/ (the forward move in
moves.py, the rollback in rollback.py, the backfill in backfill.py, the checksums, the
ledger and the copying beside them), which arrives with it at step 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import SQLAlchemyError

from composition.backfill import Feed, feeds
from kata import steps
from kata.datamove import BATCH_SIZE, LEDGER_TABLE, DataMoveError, move_back, move_context
from kata.datamove.backfill import backfill_read_model
from kata.datamove.connections import (
    context_tables,
    database_exists,
    describe_url,
    normalised,
    open_engine,
)
from kata.datamove.tables import say, tables_of
from launcher import control, databases
from launcher.databases import DatabaseSetupError
from shop.kernel.topology import load as load_topology

__all__ = ["add_command", "step_feeds", "step_urls"]

REPO = Path(__file__).resolve().parent.parent


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


def step_feeds(
    number: int | str,
    choice: str,
    *,
    data: str = steps.DATA_NAME,
    folder: Path | None = None,
) -> list[tuple[Feed, str, str]]:
    """The read models step ``number`` reads (``composition.backfill.feeds``), each with
    (its provider's database URL, its consumer's), exactly as ``python -m launcher up --data
    <data>`` names them."""
    topology = load_topology(REPO / steps.step(number).topology)
    found = []
    for feed in feeds(topology):
        provider = topology.owner(feed.provider).name
        consumer = topology.owner(feed.consumer).name
        urls = databases.service_urls(data, [provider, consumer], choice, folder=folder)
        found.append((feed, urls[provider], urls[consumer]))
    return found


async def _run(args: argparse.Namespace) -> int:
    explicit = [args.context, args.source, args.target]
    backfills: list[tuple[Feed, str, str]] = []
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
        # The read models the step runs on (up to it: the last step's, the ones it reads).
        backfills = step_feeds(step.number, args.database, data=args.data, folder=folder)
        if args.reverse and backfills:
            models = ", ".join(f"{feed.consumer}'s of {feed.provider}" for feed, _, _ in backfills)
            say(
                f"step {step.number} ({step.title}) builds read models ({models}): the rollback"
                " leaves them in place, unchanged (the step before reads none of them; a"
                " forward run brings them up to date)"
            )
            if not pairs:
                return 0
            backfills = []
        if not pairs and not backfills:
            upto = "up to " if args.up_to else ""
            say(
                f"step {upto}{step.number} ({step.title}) extracts no context and builds no"
                " read model: no data to move"
            )
            return 0
        live = control.running(args.data)
        if live is not None:
            # Rows written while they move would be left behind, or moved twice (and a read
            # model built from a snapshot that changes under it would not verify).
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
        if (
            args.if_present
            and args.reverse
            and not await database_exists(normalised(target, "target"))
        ):
            say(f"{context}: {describe_url(target)} does not exist: nothing to move back")
            continue
        if args.if_present and not args.reverse and not await _source_present(source, context):
            say(
                f"{context}: {describe_url(source)} does not hold the monolith's {context}"
                " tables yet (a fresh start): nothing to move"
            )
            continue
        run = move_back if args.reverse else move_context
        result = await run(
            context, source=source, target=target, replace=args.replace, batch_size=args.batch_size
        )
        warned = warned or bool(result.warnings)
    for feed, source, target in backfills:
        if args.if_present and not await _source_present(source, feed.provider):
            say(
                f"{feed.label}: {describe_url(source)} does not hold {feed.provider}'s tables"
                f" yet (a fresh start): no read model to build; it fills from the events"
            )
            continue
        await backfill_read_model(feed, source=source, target=target)
    if warned:
        say("finished, with the WARNING above")
    return 0


async def _source_present(url: str, context: str) -> bool:
    url = normalised(url, "source")
    if not await database_exists(url):
        return False
    async with open_engine(url) as engine:
        names, _ = await context_tables(engine, context)
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

Step 7 extracts no context: it builds the read models its broker keeps from then on
(catalog's of inventory's stock, the cart's of catalog's products) from their providers'
databases, through the consumers' own event handlers, and verifies that each answers as its
provider does for every product; a rerun changes nothing. --reverse leaves them in place.
"""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate-data`` to ``python -m kata``."""
    parser = subparsers.add_parser(
        "migrate-data",
        help="move an extracted context's rows from the monolith's database to its service's"
        " (step 7: build the read models from their providers' databases)",
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
