"""The integration events catalog publishes (recorded in ``catalog_outbox``)."""

from __future__ import annotations

from shop.kernel.events import Event


class ProductChanged(Event):
    """A product as it is now sold, after it was added or changed. The aggregate is the
    product. The price is in integer minor units of ``currency``, as catalog keeps it."""

    TYPE = "catalog.ProductChanged"

    product_id: int
    sku: str
    name: str
    category_id: int
    price_amount: int
    currency: str


class ProductDeleted(Event):
    """A product left the catalog (archived: orders still name it, carts and checkout drop
    it). The aggregate is the product."""

    TYPE = "catalog.ProductDeleted"

    product_id: int
