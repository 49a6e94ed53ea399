"""A step that backfills: its read models built from their providers' databases, verified.

At step 7 catalog answers ``available`` from ``catalog_stock_levels`` and the cart prices its
lines from ``cart_products``, read models kept from inventory's and catalog's events. No row
moves between databases; instead each model is built from its provider's source of truth
(:func:`composition.backfill.backfill`: the provider's snapshot delivered through the
consumer's own handlers, then every aggregate compared with the provider's answer).
"""

from __future__ import annotations

from composition.backfill import Backfilled, BackfillError, Feed
from composition.backfill import backfill as backfill_feed
from kata.datamove.connections import (
    create_if_missing,
    database_exists,
    describe_url,
    migrate,
    normalised,
    open_engine,
    prepare_existing,
)
from kata.datamove.tables import DataMoveError, Progress, say
from shop.kernel.db import Database


async def backfill_read_model(
    feed: Feed, *, source: str, target: str, progress: Progress = say
) -> Backfilled:
    """Build ``feed.consumer``'s read model in ``target`` (its service's database, created and
    migrated if need be) from ``feed.provider``'s rows in ``source``, and verify it.

    A rerun finds the model answering as its provider does, changes nothing and says so.
    :class:`DataMoveError` when the source is missing or the model does not verify.
    """
    source = normalised(source, "source")
    target = normalised(target, "target")
    if not await database_exists(source):
        raise DataMoveError(
            f"{feed.label}: {feed.provider}'s database {describe_url(source)} does not exist:"
            f" there is nothing to build {feed.consumer}'s read model from"
        )
    progress(f"{feed.label}: {describe_url(source)} -> {describe_url(target)}")
    async with open_engine(source) as engine:
        await prepare_existing(engine, source, feed.provider, "source", progress)
    await create_if_missing(target)
    await migrate(target, feed.consumer)
    source_db = Database.connect(source, pool_size=2)
    target_db = Database.connect(target, pool_size=2)
    try:
        return await backfill_feed(feed, source=source_db, target=target_db, progress=progress)
    except BackfillError as exc:
        raise DataMoveError(str(exc)) from exc
    finally:
        await source_db.dispose()
        await target_db.dispose()
