"""Targets for the contract suite: a deployment built in process, reached over ASGI.

``tests/contract`` never imports this module; it loads a target by name
(``--target tests.targets:monolith``, ``tests.targets:services``, ``tests.targets:step_3``),
so the suite itself stays black-box.

Every target is a topology (``topologies/*.toml``, the kata's steps in ``kata.steps``) built
in process: each service of the topology on its own scratch database, the services wired to
each other by ASGI transports, and the gateway in front when the topology has one. The
gateway and the services are imported only when a topology needs them, so the kata's first
steps need neither.
"""

from __future__ import annotations

import functools
import importlib
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from fastapi import FastAPI
from pydantic import SecretStr

from kata.steps import step
from shop.identity.settings import IdentitySettings
from shop.identity.tokens import generate_private_key_pem
from shop.kernel.events import InProcessBus
from shop.kernel.topology import Topology, load
from shop.orders.settings import OrdersSettings
from shop.payments.settings import PaymentsSettings
from tests import support

INTERNAL_TOKEN = "in-process-internal-token"
EDGE_TOKEN = "in-process-edge-token"
MONOLITH_APP = "monolith.app:create_app"


class SharedBus(InProcessBus):
    """One in-process bus for every service built in this process: none of them closes it."""

    async def aclose(self) -> None:
        return None


def _target(transport: httpx2.AsyncBaseTransport, base_url: str, key: str) -> dict[str, Any]:
    return {
        "transport": transport,
        "base_url": base_url,
        "admin_email": support.ADMIN_EMAIL,
        "admin_password": support.ADMIN_PASSWORD,
        "signing_key_pem": key,
        "issuer": support.ISSUER,
        "audience": support.AUDIENCE,
        "payment_delay_seconds": support.PAYMENT_DELAY_SECONDS,
    }


def _factory(app: str) -> Callable[..., FastAPI]:
    module, _, attr = app.partition(":")
    factory: Callable[..., FastAPI] = getattr(importlib.import_module(module), attr)
    return factory


def _settings(
    topology: Topology,
    service: str,
    url: str,
    key: str,
    identity: Mapping[str, Any] | None = None,
) -> Any:
    """The settings one service of ``topology`` gets in process (a monolith or a service);
    ``identity`` overrides identity's settings (a key file instead of the key, say)."""
    spec = topology.services[service]
    base = support.monolith_settings(url, key)
    if identity:
        base = base.with_contexts(base.contexts(IdentitySettings).model_copy(update=identity))
    if spec.app == MONOLITH_APP:
        return base.model_copy(
            update={
                "topology": topology.source,
                "service_name": service,
                "internal_token": SecretStr(INTERNAL_TOKEN),
                "edge_token": SecretStr(EDGE_TOKEN) if topology.gateway_port else None,
            }
        )
    settings_module = importlib.import_module("services.settings")
    settings = settings_module.ServiceSettings(
        database_url=url,
        internal_token=SecretStr(INTERNAL_TOKEN),
        edge_token=SecretStr(EDGE_TOKEN),
        topology=topology.source,
        service_name=service,
        recover_checkouts=False,
    )
    return settings.with_contexts(
        *(base.contexts(kind) for kind in (IdentitySettings, PaymentsSettings, OrdersSettings))
    )


@asynccontextmanager
async def service_apps(
    topology: Topology,
    key: str,
    stack: AsyncExitStack,
    tmp: Path,
    identity: Mapping[str, Any] | None = None,
) -> AsyncIterator[dict[str, httpx2.ASGITransport]]:
    """Every service of ``topology`` on its own scratch database, wired by ASGI transports.

    A monolith gets every context's tables (its database is the one the contexts leave);
    a service only its own contexts'.
    """
    transports: dict[str, httpx2.ASGITransport] = {}
    apps: dict[str, FastAPI] = {}
    workers: list[FastAPI] = []
    # A topology whose events go through the broker gets one in-process bus shared by all
    # its services instead: the same relays, subscriptions and read models, no server.
    bus = SharedBus() if topology.bus != "in-process" else None
    for name, spec in topology.services.items():
        url = await stack.enter_async_context(support.scratch_database(tmp))
        await support.migrate(url, None if spec.app == MONOLITH_APP else list(spec.contexts))
        settings = _settings(topology, name, url, key, identity)
        apps[name] = _factory(spec.app)(settings, transports=transports, bus=bus)
        transports[name] = httpx2.ASGITransport(app=apps[name])
        if spec.has_worker:
            # Its consumers' worker: the same database and bus, no transport (no requests).
            worker = importlib.import_module("services.app").create_worker
            workers.append(worker(settings, transports=transports, bus=bus))
    for app in [*apps.values(), *workers]:
        await stack.enter_async_context(app.router.lifespan_context(app))
    yield transports


@asynccontextmanager
async def deployment(
    topology_file: str | Path,
    *,
    identity_overrides: Mapping[str, Any] | None = None,
    gateway_overrides: Mapping[str, Any] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The topology in process: through its gateway if it has one, else its only service.

    The overrides replace identity's and the gateway's settings (the security tier's key
    rotation, say).
    """
    topology = load(topology_file)
    key = generate_private_key_pem()
    with tempfile.TemporaryDirectory(prefix="shopkata-") as tmp:
        async with AsyncExitStack() as stack:
            transports = await stack.enter_async_context(
                service_apps(topology, key, stack, Path(tmp), identity_overrides)
            )
            if topology.gateway_port is None:
                if len(transports) != 1:
                    raise ValueError(f"{topology.name}: several services and no gateway")
                (name, transport), *_ = transports.items()
                yield _target(transport, f"http://{name}.test", key)
                return
            gateway_app = importlib.import_module("composition.gateway")
            gateway_settings = importlib.import_module("gateway.settings")
            gateway = gateway_app.create_app(
                gateway_settings.GatewaySettings(
                    topology=topology.source,
                    issuer=support.ISSUER,
                    audience=support.AUDIENCE,
                    edge_token=SecretStr(EDGE_TOKEN),
                    **(gateway_overrides or {}),
                ),
                transports=transports,
            )
            await stack.enter_async_context(gateway.router.lifespan_context(gateway))
            yield _target(httpx2.ASGITransport(app=gateway), "http://gateway.test", key)


def kata_step(number: int) -> AbstractAsyncContextManager[dict[str, Any]]:
    """Kata step ``number`` (``kata.steps``) in process."""
    return deployment(step(number).topology)


def monolith() -> AbstractAsyncContextManager[dict[str, Any]]:
    """The modular monolith alone on a scratch database (kata step 0)."""
    return kata_step(0)


def services() -> AbstractAsyncContextManager[dict[str, Any]]:
    """Every context in its own service behind the gateway (the kata's last step)."""
    return deployment("topologies/services.toml")


step_0 = functools.partial(kata_step, 0)
step_1 = functools.partial(kata_step, 1)
step_2 = functools.partial(kata_step, 2)
step_3 = functools.partial(kata_step, 3)
step_4 = functools.partial(kata_step, 4)
step_5 = functools.partial(kata_step, 5)
step_6 = functools.partial(kata_step, 6)
step_7 = functools.partial(kata_step, 7)
