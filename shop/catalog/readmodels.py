"""Catalog's read model of inventory's stock, kept from ``inventory.StockChanged`` events.

Catalog declares here the part of inventory's event it reads, in its own terms (a consumer
never imports the publisher). The model (``catalog_stock_levels``) answers the
:class:`~shop.catalog.ports.StockLevels` port where inventory runs elsewhere and a broker
carries its events: a product page then asks no other service (but for a product the model
has not seen yet). It is a cache: checkout still reserves through inventory, which decides.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession

from shop.catalog import repository
from shop.catalog.ports import StockLevels
from shop.kernel.db import Database
from shop.kernel.events import Consumed, Envelope, Subscription

STOCK_CHANGED = "inventory.StockChanged"


class StockLevelChanged(Consumed):
    """A product's stock numbers after a change, as inventory published them."""

    product_id: int
    on_hand: int
    reserved: int
    available: int


async def apply_stock_changed(session: AsyncSession, envelope: Envelope) -> None:
    """Store the product's new numbers, unless a later event's are stored already."""
    event = StockLevelChanged.model_validate(envelope.payload)
    await repository.put_stock_level(
        session,
        event.product_id,
        on_hand=event.on_hand,
        reserved=event.reserved,
        available=event.available,
        sequence=envelope.sequence,
    )


SUBSCRIPTIONS = (Subscription(STOCK_CHANGED, apply_stock_changed),)


class StockLevelsReadModel(StockLevels):
    """:class:`StockLevels` from ``catalog_stock_levels``; the products inventory has
    published nothing about yet are asked of ``fallback`` (inventory itself), which answers
    0 for a product without stock."""

    def __init__(self, db: Database, fallback: StockLevels) -> None:
        self._db = db
        self._fallback = fallback

    async def available(self, product_ids: Collection[int]) -> dict[int, int]:
        wanted = set(product_ids)
        if not wanted:
            return {}
        async with self._db.read() as session:
            found = await repository.stock_available(session, wanted)
        unseen = wanted - found.keys()
        if unseen:
            found |= await self._fallback.available(unseen)
        return {product_id: found.get(product_id, 0) for product_id in wanted}
