"""The monolith's composition root: ``create_app()`` builds the whole shop in one process.

uvicorn --factory monolith.app:create_app
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
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
from shop.identity.service import ensure_admin
from shop.inventory.ports import ProductDirectory
from shop.inventory.router import router as inventory_router
from shop.kernel.db import Database
from shop.kernel.errors import install_error_handlers
from shop.kernel.ops import router as ops_router
from shop.kernel.security import TokenVerifier
from shop.orders.ports import CheckoutPorts
from shop.orders.router import router as orders_router
from shop.orders.service import resume_pending_orders
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


async def _bootstrap_admin(
    db: Database, identity: IdentityRuntime, settings: MonolithSettings
) -> None:
    email = settings.identity.bootstrap_admin_email
    password = settings.identity.bootstrap_admin_password
    if not email or password is None:
        return
    async with db.writer() as session, session.begin():
        _, created = await ensure_admin(
            session, passwords=identity.passwords, email=email, password=password.get_secret_value()
        )
    if created:
        logger.info("created the bootstrap admin %s", email)


async def _recovery_loop(db: Database, ports: CheckoutPorts, settings: MonolithSettings) -> None:
    """Finish checkouts that a crash left pending, now and then."""
    grace = timedelta(seconds=settings.orders.recovery_grace_seconds)
    while True:
        try:
            count = await resume_pending_orders(db, ports=ports, older_than=grace)
            if count:
                logger.warning("finished %d interrupted checkout(s)", count)
        except Exception:
            logger.exception("checkout recovery failed; retrying later")
        await anyio.sleep(settings.orders.recovery_interval_seconds)


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
            await _bootstrap_admin(db, identity, settings)
            async with anyio.create_task_group() as tasks:
                if settings.recover_checkouts:
                    tasks.start_soon(_recovery_loop, db, checkout, settings)
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
