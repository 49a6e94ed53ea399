"""Targets for the contract suite: a deployment built in process, reached over ASGI.

``tests/contract`` never imports this module; it loads a target by name
(``--target tests.targets:monolith``), so the suite itself stays black-box.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from fastapi import FastAPI
from pydantic import SecretStr

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from monolith.app import create_app
from services.settings import ServiceSettings
from shop.identity.tokens import generate_private_key_pem
from shop.kernel.topology import Topology, load
from tests import support


@asynccontextmanager
async def monolith() -> AsyncIterator[dict[str, Any]]:
    """The modular monolith on a scratch database, lifespan running, no sockets."""
    with tempfile.TemporaryDirectory(prefix="shopkata-") as tmp:
        async with support.scratch_database(Path(tmp)) as url:
            await support.migrate(url)
            key = generate_private_key_pem()
            app = create_app(support.monolith_settings(url, key))
            async with app.router.lifespan_context(app):
                yield {
                    "transport": httpx2.ASGITransport(app=app),
                    "base_url": "http://monolith.test",
                    "admin_email": support.ADMIN_EMAIL,
                    "admin_password": support.ADMIN_PASSWORD,
                    "signing_key_pem": key,
                    "issuer": support.ISSUER,
                    "audience": support.AUDIENCE,
                    "payment_delay_seconds": support.PAYMENT_DELAY_SECONDS,
                }


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


@asynccontextmanager
async def service_apps(
    topology: Topology, key: str, stack: AsyncExitStack, tmp: Path
) -> AsyncIterator[dict[str, httpx2.ASGITransport]]:
    """Every service of ``topology`` on its own scratch database, wired by ASGI transports."""
    transports: dict[str, httpx2.ASGITransport] = {}
    apps: dict[str, FastAPI] = {}
    for name, spec in topology.services.items():
        url = await stack.enter_async_context(support.scratch_database(tmp))
        await support.migrate(url, list(spec.contexts))
        settings = ServiceSettings(
            database_url=url,
            internal_token=SecretStr("in-process-internal-token"),
            topology=topology.source or Path("topologies/services.toml"),
            identity=support.identity_settings(key),
            payments=support.monolith_settings(url).payments,
            orders=support.monolith_settings(url).orders,
            recover_checkouts=False,
        )
        module, _, attr = spec.app.partition(":")
        apps[name] = getattr(importlib.import_module(module), attr)(settings, transports=transports)
        transports[name] = httpx2.ASGITransport(app=apps[name])
    for app in apps.values():
        await stack.enter_async_context(app.router.lifespan_context(app))
    yield transports


@asynccontextmanager
async def services() -> AsyncIterator[dict[str, Any]]:
    """The services in process behind the gateway: ASGI transports all the way, no sockets."""
    topology = load("topologies/services.toml")
    key = generate_private_key_pem()
    with tempfile.TemporaryDirectory(prefix="shopkata-") as tmp:
        async with AsyncExitStack() as stack:
            transports = await stack.enter_async_context(
                service_apps(topology, key, stack, Path(tmp))
            )
            gateway = create_gateway(
                GatewaySettings(
                    topology=Path("topologies/services.toml"),
                    issuer=support.ISSUER,
                    audience=support.AUDIENCE,
                ),
                transports=transports,
            )
            await stack.enter_async_context(gateway.router.lifespan_context(gateway))
            yield _target(httpx2.ASGITransport(app=gateway), "http://gateway.test", key)
