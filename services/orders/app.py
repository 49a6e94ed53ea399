"""The orders service: checkout as an orchestrated saga over cart, catalog, inventory and
payments, its recovery after a crash, order history and cancellation."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import httpx2
from fastapi import FastAPI

from bindings import http as adapters
from services.runtime import Runtime, build_app
from services.settings import ServiceSettings
from shop.orders.ports import CheckoutPorts
from shop.orders.router import router
from shop.orders.service import recovery_loop


def create_app(
    settings: ServiceSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings()

    async def wire(app: FastAPI, runtime: Runtime) -> None:
        ports = adapters.checkout_ports(
            cart=runtime.upstreams["cart"],
            catalog=runtime.upstreams["catalog"],
            inventory=runtime.upstreams["inventory"],
            payments=runtime.upstreams["payments"],
        )
        app.state.ports = {CheckoutPorts: ports}
        app.state.orders_settings = settings.orders.with_fingerprint_key()
        if settings.recover_checkouts:
            runtime.tasks.start_soon(
                functools.partial(recovery_loop, runtime.db, ports=ports, settings=settings.orders)
            )

    return build_app(
        "orders",
        settings=settings,
        transports=transports,
        routers=[router],
        calls=["cart", "catalog", "inventory", "payments"],
        wire=wire,
    )
