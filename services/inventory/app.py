"""The inventory service: stock levels and the reservations of checkouts."""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from fastapi import FastAPI

from bindings import http as adapters
from services.runtime import Runtime, build_app
from services.settings import ServiceSettings
from shop.inventory.ports import ProductDirectory
from shop.inventory.router import internal_router, router


def create_app(
    settings: ServiceSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    async def wire(app: FastAPI, runtime: Runtime) -> None:
        app.state.ports = {
            ProductDirectory: adapters.CatalogProductDirectory(runtime.upstreams["catalog"])
        }

    return build_app(
        "inventory",
        settings=settings,
        transports=transports,
        routers=[router, internal_router],
        calls=["catalog"],
        wire=wire,
    )
