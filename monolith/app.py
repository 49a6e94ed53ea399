"""The monolith's composition root: ``create_app()`` builds the whole shop in one process.

uvicorn --factory monolith.app:create_app
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from monolith import adapters
from monolith.settings import MonolithSettings
from shop.cart.ports import ProductCatalog
from shop.cart.router import router as cart_router
from shop.catalog.ports import StockLevels
from shop.catalog.router import router as catalog_router
from shop.identity.dependencies import IdentityRuntime
from shop.identity.router import router as identity_router
from shop.identity.service import bootstrap_admin
from shop.inventory.ports import ProductDirectory
from shop.inventory.router import router as inventory_router
from shop.kernel.db import Database
from shop.kernel.errors import install_error_handlers
from shop.kernel.ops import router as ops_router
from shop.kernel.security import TokenVerifier
from shop.orders.ports import CheckoutPorts
from shop.orders.router import router as orders_router
from shop.orders.service import recovery_loop
from shop.payments.processor import FakeCardProcessor
from shop.payments.router import router as payments_router

logger = logging.getLogger("monolith")

ROUTERS = [
    ops_router,
    identity_router,
    catalog_router,
    inventory_router,
    cart_router,
    orders_router,
    payments_router,
]


def create_app(settings: MonolithSettings | None = None) -> FastAPI:
    """The whole shop on one database (settings from the environment by default)."""
    settings = settings or MonolithSettings()
    identity = IdentityRuntime.from_settings(settings.identity)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.connect(settings.database_url, pool_size=settings.db_pool_size)
        processor = FakeCardProcessor(delay_seconds=settings.payments.processor_delay_seconds)
        checkout = adapters.checkout_ports(db, processor)

        async def jwks() -> dict[str, Any]:
            return identity.signing_key.jwks()

        app.state.database = db
        app.state.identity = identity
        app.state.token_verifier = TokenVerifier(
            jwks, issuer=settings.identity.issuer, audience=settings.identity.audience
        )
        app.state.cart_settings = settings.cart
        app.state.ports = {
            StockLevels: adapters.InventoryStockLevels(db),
            ProductDirectory: adapters.CatalogProductDirectory(db),
            ProductCatalog: adapters.CatalogEntries(db),
            CheckoutPorts: checkout,
        }
        try:
            if await bootstrap_admin(db, passwords=identity.passwords, settings=settings.identity):
                logger.info("bootstrap admin %s ready", settings.identity.bootstrap_admin_email)
            async with anyio.create_task_group() as tasks:
                if settings.recover_checkouts:
                    tasks.start_soon(
                        functools.partial(
                            recovery_loop, db, ports=checkout, settings=settings.orders
                        )
                    )
                yield
                tasks.cancel_scope.cancel()
        finally:
            await db.dispose()

    app = FastAPI(
        title="shopkata",
        summary="An online shop: identity, catalog, inventory, cart, orders, payments.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
