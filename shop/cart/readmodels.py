"""The cart's read model of the catalog, kept from ``catalog.ProductChanged`` and
``catalog.ProductDeleted`` events.

The cart declares here the part of the catalog's events it reads, in its own terms (a
consumer never imports the publisher). The model (``cart_products``) answers the
:class:`~shop.cart.ports.ProductCatalog` port where the catalog runs elsewhere and a broker
carries its events: showing a cart then asks no other service (but for a product the
model has not seen yet). It is a cache: checkout still takes its prices from the catalog,
which decides.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession

from shop.cart import repository
from shop.cart.ports import CatalogEntry, ProductCatalog
from shop.kernel.db import Database
from shop.kernel.events import Consumed, Envelope, Subscription
from shop.kernel.types import Money

PRODUCT_CHANGED = "catalog.ProductChanged"
PRODUCT_DELETED = "catalog.ProductDeleted"


class ProductOnSale(Consumed):
    """A product as the catalog sells it now (price in integer minor units)."""

    product_id: int
    name: str
    price_amount: int
    currency: str


class ProductWithdrawn(Consumed):
    """A product the catalog no longer sells."""

    product_id: int


async def apply_product_changed(session: AsyncSession, envelope: Envelope) -> None:
    """Store the product's name and price, unless a later event about it is stored."""
    event = ProductOnSale.model_validate(envelope.payload)
    await repository.put_product(
        session,
        event.product_id,
        {
            "name": event.name,
            "price_amount": event.price_amount,
            "currency": event.currency,
            "deleted": False,
        },
        sequence=envelope.sequence,
    )


async def apply_product_deleted(session: AsyncSession, envelope: Envelope) -> None:
    """Mark the product withdrawn, unless a later event about it is stored."""
    event = ProductWithdrawn.model_validate(envelope.payload)
    await repository.put_product(
        session, event.product_id, {"deleted": True}, sequence=envelope.sequence
    )


SUBSCRIPTIONS = (
    Subscription(PRODUCT_CHANGED, apply_product_changed),
    Subscription(PRODUCT_DELETED, apply_product_deleted),
)


class ProductsReadModel(ProductCatalog):
    """:class:`ProductCatalog` from ``cart_products``: a withdrawn product is left out, as
    the catalog answers; a product the catalog has announced nothing about yet (one created
    a moment ago) is asked of ``fallback`` (the catalog itself)."""

    def __init__(self, db: Database, fallback: ProductCatalog) -> None:
        self._db = db
        self._fallback = fallback

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        wanted = set(product_ids)
        if not wanted:
            return {}
        async with self._db.read() as session:
            rows = await repository.list_products(session, wanted)
        found = {
            row.product_id: CatalogEntry(
                product_id=row.product_id,
                name=row.name,
                price=Money(amount=row.price_amount, currency=row.currency),
            )
            for row in rows
            if not row.deleted
        }
        unseen = wanted - {row.product_id for row in rows}
        if unseen:
            found |= await self._fallback.entries(unseen)
        return found
