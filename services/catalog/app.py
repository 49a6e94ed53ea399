"""The catalog service: categories and products; `available` comes from inventory."""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from fastapi import FastAPI

from bindings import http as adapters
from services.runtime import Runtime, build_app
from services.settings import ServiceSettings
from shop.catalog.ports import StockLevels
from shop.catalog.router import internal_router, router


def create_app(
    settings: ServiceSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    async def wire(app: FastAPI, runtime: Runtime) -> None:
        app.state.ports = {
            StockLevels: adapters.InventoryStockLevels(runtime.upstreams["inventory"])
        }

    return build_app(
        "catalog",
        settings=settings,
        transports=transports,
        routers=[router, internal_router],
        calls=["inventory"],
        wire=wire,
    )
