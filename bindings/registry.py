"""Which context answers each port, and its two adapters: in process and over HTTP.

The composition root binds every port a served context needs (its ``Context.needs``) by
looking it up here: the in-process adapter when the provider is served in the same process,
the HTTP adapter on an upstream to the provider's service otherwise. A port with no entry
here is a composition error, named at start-up (and by ``tests/composition/test_declarations.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.datastructures import State

from bindings import http, inprocess
from shop.cart.ports import ProductCatalog
from shop.catalog.ports import StockLevels
from shop.inventory.ports import ProductDirectory
from shop.kernel.db import Database
from shop.kernel.http import Upstream
from shop.orders.ports import Cart, Payments, PriceList, Stock

P = TypeVar("P")


@dataclass(frozen=True)
class Binding(Generic[P]):
    port: type[P]
    provider: str
    """The context whose service answers the port."""
    local: Callable[[Database, State], P]
    """The in-process adapter, on the shared database (and the provider's app state)."""
    remote: Callable[[Upstream], P]
    """The HTTP adapter, on an upstream to the provider's service."""


def _on_db(adapter: Callable[[Database], P]) -> Callable[[Database, State], P]:
    return lambda db, _state: adapter(db)


BINDINGS: dict[type[Any], Binding[Any]] = {
    binding.port: binding
    for binding in (
        Binding[StockLevels](
            StockLevels,
            "inventory",
            _on_db(inprocess.InventoryStockLevels),
            http.InventoryStockLevels,
        ),
        Binding[ProductDirectory](
            ProductDirectory,
            "catalog",
            _on_db(inprocess.CatalogProductDirectory),
            http.CatalogProductDirectory,
        ),
        Binding[ProductCatalog](
            ProductCatalog,
            "catalog",
            _on_db(inprocess.CatalogEntries),
            http.CatalogEntries,
        ),
        Binding[PriceList](
            PriceList,
            "catalog",
            _on_db(inprocess.CatalogPriceList),
            http.CatalogPriceList,
        ),
        Binding[Cart](
            Cart,
            "cart",
            _on_db(inprocess.CartLines),
            http.CartLines,
        ),
        Binding[Stock](
            Stock,
            "inventory",
            _on_db(inprocess.InventoryReservations),
            http.InventoryReservations,
        ),
        Binding[Payments](
            Payments,
            "payments",
            # Charging in process needs payments' runtime (its processor), which payments'
            # own start hook put in the app state.
            lambda db, state: inprocess.PaymentsProcessor(db, state.payments),
            http.PaymentsProcessor,
        ),
    )
}
