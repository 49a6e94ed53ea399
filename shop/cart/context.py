"""Cart: each user's cart, priced from the catalog."""

from __future__ import annotations

from shop.cart.ports import ProductCatalog
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
)
