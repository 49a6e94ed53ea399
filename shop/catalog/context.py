"""Catalog: categories and products; a product's `available` comes from inventory.

Catalog publishes its products' changes (``catalog.ProductChanged``, ``ProductDeleted``), and
every product's current state as a snapshot of those events (what a new read model is built
from). It keeps inventory's stock numbers in a read model of its own
(:mod:`shop.catalog.readmodels`), which answers ``StockLevels`` when inventory runs elsewhere
and a broker carries its events.
"""

from __future__ import annotations

from shop.catalog import service
from shop.catalog.models import inbox, outbox
from shop.catalog.ports import StockLevels
from shop.catalog.readmodels import SUBSCRIPTIONS, StockLevelsReadModel
from shop.catalog.router import internal_router, router
from shop.kernel.context import Context

CONTEXT = Context(
    name="catalog",
    router=router,
    internal_router=internal_router,
    prefixes=("/categories", "/products"),
    needs=(StockLevels,),
    outbox=outbox,
    snapshot=service.snapshot,
    inbox=inbox,
    subscriptions=SUBSCRIPTIONS,
    read_models={StockLevels: StockLevelsReadModel},
)
