"""``build()``: one FastAPI app serving some contexts on one database, the rest elsewhere.

Every deployable is this function with other arguments: the monolith serves every context;
a service serves the contexts its topology gives it; a kata step's monolith serves what is
left. Each served context's public router is mounted unchanged; its internal router too when
some context runs in another process (a caller may be remote). Each port a served context
needs is bound through :data:`bindings.registry.BINDINGS`: in process when its provider is
served here, over HTTP to the provider's service otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import httpx2
from fastapi import FastAPI

from bindings import http
from bindings.registry import BINDINGS
from composition.contexts import CompositionError, declared, pick
from composition.settings import DeployableSettings
from shop.identity.settings import IdentitySettings
from shop.kernel.broker import RabbitBus
from shop.kernel.context import Context, Runtime
from shop.kernel.db import Database
from shop.kernel.docs import SUMMARY, TITLE, VERSION, install_docs
from shop.kernel.edge import install_edge
from shop.kernel.errors import install_error_handlers
from shop.kernel.events import Bus, InProcessBus, Relay, consumer
from shop.kernel.http import Upstream
from shop.kernel.ops import router as ops_router
from shop.kernel.security import TokenVerifier
from shop.kernel.topology import Topology

logger = logging.getLogger("composition")

EVENTS_RETRY_SECONDS = 1.0
"""How often a deployable tries the bus again when it was not reachable at start."""
KEYS_CONTEXT = "identity"
"""The context that publishes the token keys (JWKS) every deployable verifies with."""


class _Upstreams:
    """Upstreams to the contexts served elsewhere, opened on first use, closed with the app."""

    def __init__(
        self,
        settings: DeployableSettings,
        topology: Topology | None,
        stack: AsyncExitStack,
        transports: Mapping[str, httpx2.AsyncBaseTransport],
    ) -> None:
        self._settings = settings
        self._topology = topology
        self._stack = stack
        self._transports = transports
        self._open: dict[str, Upstream] = {}

    def __call__(self, context: str) -> Upstream:
        if context not in self._open:
            if self._topology is None:
                raise CompositionError(
                    f"{context} is not served here and no topology says where it runs"
                )
            token = self._settings.internal_token
            client = http.upstream(
                context,
                self._topology,
                self._settings,
                internal_token=token.get_secret_value() if token else "",
                read_floor=declared()[context].call_floor(self._settings.contexts),
                transports=self._transports,
            )
            self._stack.push_async_callback(client.aclose)
            self._open[context] = client
        return self._open[context]


def _bind(
    runtime: Runtime, served: tuple[Context, ...], remote: _Upstreams, *, brokered: bool
) -> None:
    """Each needed port: in process when its provider is here; else from the context's own
    read model when a broker feeds it (``brokered``); else over HTTP."""
    names = {context.name for context in served}
    for context in served:
        for port in context.needs:
            binding = BINDINGS.get(port)
            if binding is None:
                raise CompositionError(
                    f"{context.name} needs {port.__module__}.{port.__qualname__}, which no"
                    " entry of bindings/registry.py binds"
                )
            if binding.provider in names:
                runtime.ports[port] = binding.local(runtime.db, runtime.state)
            elif brokered and port in context.read_models:
                # What the read model has not seen yet (a product created a moment ago) is
                # asked of the provider.
                fallback = binding.remote(remote(binding.provider))
                runtime.ports[port] = context.read_models[port](runtime.db, fallback)
            else:
                runtime.ports[port] = binding.remote(remote(binding.provider))


def _bus(settings: DeployableSettings, topology: Topology | None) -> Bus:
    """The topology's bus: in process (the monolith's), or the RabbitMQ broker at
    ``SHOP_BROKER_URL`` with its names under ``SHOP_BUS_PREFIX``, connected when the first
    subscription or publish needs it."""
    kind = "in-process" if topology is None else topology.bus
    if kind == "rabbitmq":
        return RabbitBus(settings.broker_url.get_secret_value(), prefix=settings.bus_prefix)
    return InProcessBus()


async def forget_broker_names(bus: RabbitBus) -> None:
    """Delete every exchange and queue the shop's processes declare under ``bus``'s prefix:
    for a deployment taken down for good (a benchmark's, a test's)."""
    contexts = declared().values()
    await bus.delete(
        consumers=[context.name for context in contexts if context.subscriptions],
        sources=[
            context.name
            for context in contexts
            if context.outbox is not None or context.subscriptions
        ],
    )


async def _start_events(
    runtime: Runtime,
    served: tuple[Context, ...],
    bus: Bus,
    *,
    consume: bool = True,
    publish: bool = True,
) -> None:
    """Declare every consumer of the shop on the bus, subscribe the served ones (unless
    their consumers run in a worker), then start a relay per served publisher (unless this
    is that worker); all in the background, again until the bus answers (a broker that is
    not up yet delays the events, it does not stop the app)."""
    consumers = {
        context.name: sorted({item.type for item in context.subscriptions})
        for context in declared().values()
        if context.subscriptions
    }
    subscribing = []
    for context in served if consume else ():
        if context.subscriptions:
            if context.inbox is None:
                raise CompositionError(f"{context.name} subscribes to events but has no inbox")
            handlers = {item.type: item.handler for item in context.subscriptions}
            subscribing.append((context.name, consumer(runtime.db, context.inbox, handlers)))
    relays = [
        Relay(context.name, runtime.db, context.outbox, bus)
        for context in (served if publish else ())
        if context.outbox is not None
    ]
    if not subscribing and not relays:
        return  # nothing served here publishes or consumes: the bus is never touched

    subscribed: set[str] = set()

    async def connect() -> None:
        await bus.declare(consumers)
        for name, deliver in subscribing:
            # Tried again from the top when one fails: a consumer already in place is not
            # subscribed twice (the bus keeps every subscription).
            if name not in subscribed:
                await bus.subscribe(name, consumers[name], deliver)
                subscribed.add(name)

    try:
        await connect()
    except Exception as exc:
        logger.warning("events: the bus is not reachable yet (%s); retrying", exc)

        async def retry() -> None:
            while True:
                await anyio.sleep(EVENTS_RETRY_SECONDS)
                try:
                    await connect()
                except Exception as again:
                    logger.warning("events: the bus is still not reachable (%s)", again)
                    continue
                logger.info("events: connected to the bus")
                for relay in relays:
                    runtime.tasks.start_soon(relay.run)
                return

        runtime.tasks.start_soon(retry)
        return
    for relay in relays:
        runtime.tasks.start_soon(relay.run)


def build(
    settings: DeployableSettings,
    *,
    service: str,
    served: tuple[str, ...],
    database_url: str,
    topology: Topology | None = None,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
    bus: Bus | None = None,
    worker: bool = False,
) -> FastAPI:
    """An app serving the ``served`` contexts on ``database_url``.

    ``topology`` says where the other contexts run (none: every context must be served
    here). ``transports`` (by service name) reaches the other services in process, as
    tests do; the same mapping, not a copy, so a test can fill it as it builds the apps.
    ``bus`` replaces the topology's (tests share one in-process bus between the services
    they build, in place of the broker); the caller closes it.

    A service whose topology entry says ``consumers = "worker"`` consumes its events in a
    process of its own: ``worker=True`` builds that one. It subscribes its contexts to the
    bus and answers only the health checks (no routes of its contexts, no relay, none of
    their background runs); the service's own processes then do not subscribe.
    """
    contexts = pick(served, where=service)
    spec = topology.services.get(service) if topology is not None else None
    has_worker = spec is not None and spec.has_worker
    if worker and not has_worker:
        raise CompositionError(
            f"{service} has no worker in topology {topology.name if topology else '(none)'}:"
            ' its entry says consumers = "in-service", so its own processes consume its events'
        )
    if worker and not any(context.subscriptions for context in contexts):
        raise CompositionError(
            f"{service} runs its consumers in a worker, but none of its contexts"
            f" ({', '.join(served)}) subscribes to events"
        )
    # The contexts whose routes and background runs this process has (a worker: none).
    api = () if worker else contexts
    elsewhere = sorted(set(declared()) - set(served))
    internal_token = settings.internal_token.get_secret_value() if settings.internal_token else ""
    if elsewhere and not internal_token:
        raise CompositionError(
            f"{', '.join(elsewhere)} served elsewhere but SHOP_INTERNAL_TOKEN is not set: the"
            " processes of the shop need a shared secret for their calls to each other"
            " (the launcher generates one per run)"
        )
    links: Mapping[str, httpx2.AsyncBaseTransport] = {} if transports is None else transports
    identity = settings.contexts(IdentitySettings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.connect(database_url, pool_size=settings.db_pool_size)
        async with AsyncExitStack() as stack, anyio.create_task_group() as tasks:
            stack.push_async_callback(db.dispose)
            remote = _Upstreams(settings, topology, stack, links)
            runtime = Runtime(
                service=service,
                db=db,
                state=app.state,
                settings=settings.contexts,
                ports={},
                tasks=tasks,
                stack=stack,
                background=settings.recover_checkouts,
            )
            app.state.database = db
            app.state.internal_token = internal_token
            app.state.edge_token = (
                settings.edge_token.get_secret_value() if settings.edge_token else ""
            )
            app.state.ports = runtime.ports
            for context in contexts:
                if context.start is not None:
                    await context.start(runtime)
            app.state.token_verifier = TokenVerifier(
                runtime.jwks or http.remote_jwks(remote(KEYS_CONTEXT)),
                issuer=identity.issuer,
                audience=identity.audience,
                max_age_seconds=identity.jwks_max_age_seconds,
            )
            events = bus
            if events is None:
                events = _bus(settings, topology)
                stack.push_async_callback(events.aclose)
            brokered = topology is not None and topology.bus != "in-process"
            _bind(runtime, contexts, remote, brokered=brokered)
            await _start_events(
                runtime, contexts, events, consume=worker or not has_worker, publish=not worker
            )
            for context in api:
                if context.run is not None:
                    await context.run(runtime)
            yield
            tasks.cancel_scope.cancel()

    app = FastAPI(
        title=TITLE,
        summary=SUMMARY,
        version=VERSION,
        lifespan=lifespan,
        # /docs with a strict Content-Security-Policy (shop.kernel.docs); no ReDoc. A worker
        # serves no API, so it documents none.
        docs_url=None,
        redoc_url=None,
        openapi_url=None if worker else "/openapi.json",
    )
    install_error_handlers(app)
    install_edge(app, settings)
    if not worker:
        install_docs(app)
    app.include_router(ops_router)
    for context in api:
        app.include_router(context.router)
        if context.internal_router is not None and elsewhere:
            app.include_router(context.internal_router)
    return app


def served_by(topology: Topology, service: str) -> tuple[str, ...]:
    """The contexts ``service`` serves in ``topology``; a clear error if it has no such service."""
    spec = topology.services.get(service)
    if spec is None:
        raise CompositionError(
            f"topology {topology.source or topology.name} has no service named {service!r}:"
            f" {sorted(topology.services)}"
        )
    return spec.contexts


__all__ = ["CompositionError", "build", "served_by"]
