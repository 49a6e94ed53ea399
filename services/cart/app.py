"""The cart service: each customer's cart, priced by the catalog service."""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from fastapi import FastAPI

from bindings import http as adapters
from services.runtime import Runtime, build_app
from services.settings import ServiceSettings
from shop.cart.ports import ProductCatalog
from shop.cart.router import internal_router, router


def create_app(
    settings: ServiceSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings()

    async def wire(app: FastAPI, runtime: Runtime) -> None:
        app.state.cart_settings = settings.cart
        app.state.ports = {ProductCatalog: adapters.CatalogEntries(runtime.upstreams["catalog"])}

    return build_app(
        "cart",
        settings=settings,
        transports=transports,
        routers=[router, internal_router],
        calls=["catalog"],
        wire=wire,
    )
