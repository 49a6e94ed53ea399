"""Orders: checkout as a saga over cart, catalog, inventory and payments, its recovery after
a crash, order history and cancellation."""

from __future__ import annotations

import functools

from shop.kernel.context import Context, Runtime
from shop.orders.models import outbox
from shop.orders.ports import Cart, CheckoutPorts, Payments, PriceList, Stock
from shop.orders.router import router
from shop.orders.service import recovery_loop
from shop.orders.settings import OrdersSettings


async def start(runtime: Runtime) -> None:
    runtime.state.orders_settings = runtime.settings(OrdersSettings).with_fingerprint_key()


async def run(runtime: Runtime) -> None:
    # The saga's four ports, as the routes and the recovery take them.
    ports = CheckoutPorts(
        cart=runtime.port(Cart),
        prices=runtime.port(PriceList),
        stock=runtime.port(Stock),
        payments=runtime.port(Payments),
    )
    runtime.ports[CheckoutPorts] = ports
    if runtime.background:
        runtime.tasks.start_soon(
            functools.partial(
                recovery_loop, runtime.db, ports=ports, settings=runtime.state.orders_settings
            )
        )


CONTEXT = Context(
    name="orders",
    router=router,
    prefixes=("/orders",),
    needs=(Cart, PriceList, Stock, Payments),
    start=start,
    run=run,
    outbox=outbox,
)
