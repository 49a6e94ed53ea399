"""What every service does the same way: database, upstreams, token check, error handling.

A service's ``app.py`` says only what is its own: its routers, which contexts it calls, and
how its ports bind to those upstreams.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx2
from fastapi import APIRouter, FastAPI

from bindings.http import remote_jwks, upstream
from services.settings import ServiceSettings
from shop.kernel.db import Database
from shop.kernel.docs import install_docs
from shop.kernel.edge import install_edge
from shop.kernel.errors import install_error_handlers
from shop.kernel.http import Upstream
from shop.kernel.ops import router as ops_router
from shop.kernel.security import JwksSource, TokenVerifier
from shop.kernel.topology import Topology, load

logger = logging.getLogger("services")


@dataclass
class Runtime:
    """The live pieces of one service, handed to its wiring function in the lifespan."""

    name: str
    settings: ServiceSettings
    topology: Topology
    db: Database
    upstreams: dict[str, Upstream]
    """By context name: the upstream of the service that serves that context."""
    tasks: anyio.abc.TaskGroup
    stack: AsyncExitStack
    """Closes what the wiring opened, when the service stops."""


Wiring = Callable[[FastAPI, Runtime], Awaitable[None]]


def build_app(
    name: str,
    *,
    settings: ServiceSettings | None,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None,
    routers: Sequence[APIRouter],
    calls: Sequence[str],
    wire: Wiring,
    jwks: Callable[[Runtime], JwksSource] | None = None,
) -> FastAPI:
    """A service: ``routers`` on its own database, upstreams to the contexts in ``calls``.

    ``jwks`` gives the token verifier its key source; by default identity's, over HTTP.
    """
    settings = settings or ServiceSettings()
    internal_token = settings.internal_token.get_secret_value() if settings.internal_token else ""
    if not internal_token:
        raise RuntimeError(
            "SHOP_INTERNAL_TOKEN is not set: services need a shared secret for their calls"
            " to each other (the launcher generates one per run)"
        )
    topology = load(settings.topology)
    database_url = settings.database_url or f"sqlite+aiosqlite:///var/services/{name}.db"
    # The same mapping, not a copy: a test fills it as it builds the apps.
    links: Mapping[str, httpx2.AsyncBaseTransport] = {} if transports is None else transports
    needed = set(calls) | ({"identity"} if jwks is None else set())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.connect(database_url, pool_size=settings.db_pool_size)
        async with AsyncExitStack() as stack, anyio.create_task_group() as tasks:
            stack.push_async_callback(db.dispose)
            upstreams = {}
            for context in sorted(needed):
                # The read timeout of a charge must outlast the card processor's slowest answer.
                floor = settings.payments.processor_delay_seconds + 2.0
                client = upstream(
                    context,
                    topology,
                    settings,
                    internal_token=internal_token,
                    read_floor=floor if context == "payments" else 0.0,
                    transports=links,
                )
                stack.push_async_callback(client.aclose)
                upstreams[context] = client
            runtime = Runtime(name, settings, topology, db, upstreams, tasks, stack)
            source = jwks(runtime) if jwks is not None else remote_jwks(upstreams["identity"])
            app.state.database = db
            app.state.internal_token = internal_token
            app.state.edge_token = (
                settings.edge_token.get_secret_value() if settings.edge_token else ""
            )
            app.state.token_verifier = TokenVerifier(
                source,
                issuer=settings.identity.issuer,
                audience=settings.identity.audience,
                max_age_seconds=settings.identity.jwks_max_age_seconds,
            )
            await wire(app, runtime)
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
    for router in routers:
        app.include_router(router)
    return app
