"""The monolith's composition root: ``create_app()`` builds the shop in one process.

uvicorn --factory monolith.app:create_app

On its own it serves every context on one database, each port bound in process. In a kata
step (``SHOP_TOPOLOGY`` names a topology in which some contexts were extracted) it serves
only the contexts the topology leaves it, mounts their internal APIs for the extracted
services to call, and binds the ports that lead to extracted contexts to HTTP adapters:
the same ports, other bindings (``bindings/``). No context's code changes.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType
from typing import Any

import anyio
import httpx2
from fastapi import APIRouter, FastAPI

from bindings import inprocess
from monolith.settings import MonolithSettings
from shop.cart import router as cart
from shop.cart.ports import ProductCatalog
from shop.catalog import router as catalog
from shop.catalog.ports import StockLevels
from shop.identity import router as identity
from shop.identity.dependencies import IdentityRuntime
from shop.identity.service import bootstrap_admin
from shop.inventory import router as inventory
from shop.inventory.ports import ProductDirectory
from shop.kernel.db import Database
from shop.kernel.docs import install_docs
from shop.kernel.edge import install_edge
from shop.kernel.errors import install_error_handlers
from shop.kernel.http import Upstream
from shop.kernel.ops import router as ops_router
from shop.kernel.security import JwksSource, TokenVerifier
from shop.kernel.topology import load
from shop.orders import router as orders
from shop.orders.ports import CheckoutPorts
from shop.orders.service import recovery_loop
from shop.payments import router as payments
from shop.payments.dependencies import PaymentsRuntime

logger = logging.getLogger("monolith")

CONTEXTS: dict[str, tuple[APIRouter, APIRouter | None]] = {
    # context: (public router, internal router for the services that call it)
    "identity": (identity.router, None),
    "catalog": (catalog.router, catalog.internal_router),
    "inventory": (inventory.router, inventory.internal_router),
    "cart": (cart.router, cart.internal_router),
    "orders": (orders.router, None),
    "payments": (payments.router, payments.internal_router),
}


def served_contexts(settings: MonolithSettings) -> tuple[str, ...]:
    """The contexts this monolith serves: all of them, or those its kata topology gives it."""
    if settings.topology is None:
        return tuple(CONTEXTS)
    topology = load(settings.topology)
    spec = topology.services.get(settings.service_name)
    if spec is None:
        raise RuntimeError(
            f"topology {settings.topology} has no service named {settings.service_name!r}"
        )
    unknown = sorted(set(spec.contexts) - set(CONTEXTS))
    if unknown:
        raise RuntimeError(f"topology {settings.topology}: unknown contexts {unknown}")
    return tuple(context for context in CONTEXTS if context in spec.contexts)


def _http_bindings() -> ModuleType:
    # Imported only when a context has been extracted: the monolith of the kata's first
    # steps has no HTTP adapters at all (bindings/http.py arrives with the first service).
    return importlib.import_module("bindings.http")


class _Remote:
    """The upstreams to the extracted contexts, opened on first use, closed with the app."""

    def __init__(
        self,
        settings: MonolithSettings,
        stack: AsyncExitStack,
        transports: Mapping[str, httpx2.AsyncBaseTransport],
    ) -> None:
        self._settings = settings
        self._stack = stack
        self._transports = transports
        self._upstreams: dict[str, Upstream] = {}
        self.http = _http_bindings()
        self._topology = load(settings.topology)

    def __call__(self, context: str) -> Upstream:
        if context not in self._upstreams:
            token = self._settings.internal_token
            # The read timeout of a charge must outlast the card processor's slowest answer.
            floor = self._settings.payments.processor_delay_seconds + 2.0
            client: Upstream = self.http.upstream(
                context,
                self._topology,
                self._settings,
                internal_token=token.get_secret_value() if token else "",
                read_floor=floor if context == "payments" else 0.0,
                transports=self._transports,
            )
            self._stack.push_async_callback(client.aclose)
            self._upstreams[context] = client
        return self._upstreams[context]


def _bind(
    served: tuple[str, ...],
    db: Database,
    payments_runtime: PaymentsRuntime,
    remote: Callable[[], _Remote],
) -> dict[type, object]:
    """Each port of a served context, bound in process or over HTTP to where its peer lives."""

    def pick(peer: str, local: Callable[[], object], over_http: str) -> Any:
        if peer in served:
            return local()
        bindings = remote()
        return getattr(bindings.http, over_http)(bindings(peer))

    ports: dict[type, object] = {}
    if "catalog" in served:
        ports[StockLevels] = pick(
            "inventory", lambda: inprocess.InventoryStockLevels(db), "InventoryStockLevels"
        )
    if "inventory" in served:
        ports[ProductDirectory] = pick(
            "catalog", lambda: inprocess.CatalogProductDirectory(db), "CatalogProductDirectory"
        )
    if "cart" in served:
        ports[ProductCatalog] = pick(
            "catalog", lambda: inprocess.CatalogEntries(db), "CatalogEntries"
        )
    if "orders" in served:
        ports[CheckoutPorts] = CheckoutPorts(
            cart=pick("cart", lambda: inprocess.CartLines(db), "CartLines"),
            prices=pick("catalog", lambda: inprocess.CatalogPriceList(db), "CatalogPriceList"),
            stock=pick(
                "inventory", lambda: inprocess.InventoryReservations(db), "InventoryReservations"
            ),
            payments=pick(
                "payments",
                lambda: inprocess.PaymentsProcessor(db, payments_runtime),
                "PaymentsProcessor",
            ),
        )
    return ports


def create_app(
    settings: MonolithSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """The shop's contexts on one database (settings from the environment by default).

    ``transports`` (by service name) reaches extracted services in process, as tests do.
    """
    settings = settings or MonolithSettings()
    served = served_contexts(settings)
    extracted = [context for context in CONTEXTS if context not in served]
    internal_token = settings.internal_token.get_secret_value() if settings.internal_token else ""
    if extracted and not internal_token:
        raise RuntimeError(
            f"{', '.join(extracted)} served elsewhere but SHOP_INTERNAL_TOKEN is not set: the"
            " monolith and the services need a shared secret for their calls to each other"
            " (the launcher generates one per run)"
        )
    identity_runtime = (
        IdentityRuntime.from_settings(settings.identity) if "identity" in served else None
    )
    # The same mapping, not a copy: a test fills it as it builds the apps.
    links: Mapping[str, httpx2.AsyncBaseTransport] = {} if transports is None else transports

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.connect(settings.database_url, pool_size=settings.db_pool_size)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(db.dispose)
            opened: list[_Remote] = []

            def remote() -> _Remote:
                if not opened:
                    opened.append(_Remote(settings, stack, links))
                return opened[0]

            payments_runtime = PaymentsRuntime.from_settings(settings.payments)
            jwks: JwksSource
            if identity_runtime is not None:
                keys = identity_runtime.keys

                async def local_jwks() -> dict[str, Any]:
                    return keys.jwks()

                jwks = local_jwks
                app.state.identity = identity_runtime
                stack.push_async_callback(identity_runtime.aclose)
            else:
                bindings = remote()
                jwks = bindings.http.remote_jwks(bindings("identity"))
            app.state.database = db
            app.state.internal_token = internal_token
            app.state.edge_token = (
                settings.edge_token.get_secret_value() if settings.edge_token else ""
            )
            app.state.token_verifier = TokenVerifier(
                jwks,
                issuer=settings.identity.issuer,
                audience=settings.identity.audience,
                max_age_seconds=settings.identity.jwks_max_age_seconds,
            )
            app.state.cart_settings = settings.cart
            if "orders" in served:
                app.state.orders_settings = settings.orders.with_fingerprint_key()
            app.state.payments = payments_runtime
            app.state.ports = _bind(served, db, payments_runtime, remote)
            if identity_runtime is not None and await bootstrap_admin(
                db, passwords=identity_runtime.passwords, settings=settings.identity
            ):
                logger.info("bootstrap admin %s ready", settings.identity.bootstrap_admin_email)
            async with anyio.create_task_group() as tasks:
                if settings.recover_checkouts and "orders" in served:
                    checkout = app.state.ports[CheckoutPorts]
                    tasks.start_soon(
                        functools.partial(
                            recovery_loop, db, ports=checkout, settings=settings.orders
                        )
                    )
                yield
                tasks.cancel_scope.cancel()

    app = FastAPI(
        title="shopkata",
        summary="An online shop: identity, catalog, inventory, cart, orders, payments.",
        version="0.1.0",
        lifespan=lifespan,
        # /docs with a strict Content-Security-Policy (shop.kernel.docs); no ReDoc.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_edge(app, settings)
    install_docs(app)
    app.include_router(ops_router)
    for context in served:
        public, internal = CONTEXTS[context]
        app.include_router(public)
        if internal is not None and extracted:
            app.include_router(internal)
    return app
