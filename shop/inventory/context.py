"""Inventory: stock per product, and the reservations a checkout holds; publishes each
product's stock numbers as they change (``inventory.StockChanged``), and every product's
current numbers as a snapshot of those events (what a new read model is built from)."""

from __future__ import annotations

from shop.inventory import service
from shop.inventory.models import outbox
from shop.inventory.ports import ProductDirectory
from shop.inventory.router import internal_router, router
from shop.kernel.context import Context

CONTEXT = Context(
    name="inventory",
    router=router,
    internal_router=internal_router,
    prefixes=("/inventory",),
    needs=(ProductDirectory,),
    outbox=outbox,
    snapshot=service.snapshot,
)
