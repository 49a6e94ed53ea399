"""Catalog: categories and products; a product's `available` comes from inventory."""

from __future__ import annotations

from shop.catalog.ports import StockLevels
from shop.catalog.router import internal_router, router
from shop.kernel.context import Context

CONTEXT = Context(
    name="catalog",
    router=router,
    internal_router=internal_router,
    prefixes=("/categories", "/products"),
    needs=(StockLevels,),
)
