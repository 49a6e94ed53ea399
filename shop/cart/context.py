"""Cart: each user's cart, priced from the catalog.

The cart keeps the catalog's names and prices in a read model of its own
(:mod:`shop.cart.readmodels`), which answers ``ProductCatalog`` when the catalog runs
elsewhere and a broker carries its events.
"""

from __future__ import annotations

from shop.cart.models import inbox
from shop.cart.ports import ProductCatalog
from shop.cart.readmodels import SUBSCRIPTIONS, ProductsReadModel
from shop.cart.router import internal_router, router
from shop.cart.settings import CartSettings
from shop.kernel.context import Context, Runtime


async def start(runtime: Runtime) -> None:
    runtime.state.cart_settings = runtime.settings(CartSettings)


CONTEXT = Context(
    name="cart",
    router=router,
    internal_router=internal_router,
    prefixes=("/cart",),
    needs=(ProductCatalog,),
    start=start,
    inbox=inbox,
    subscriptions=SUBSCRIPTIONS,
    read_models={ProductCatalog: ProductsReadModel},
)
