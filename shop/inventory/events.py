"""The integration events inventory publishes (recorded in ``inventory_outbox``)."""

from __future__ import annotations

from shop.kernel.events import Event


class StockChanged(Event):
    """A product's stock numbers after a change: an admin's update, or a reservation held,
    committed (sold), released or returned. The aggregate is the product."""

    TYPE = "inventory.StockChanged"

    product_id: int
    on_hand: int
    reserved: int
    available: int
