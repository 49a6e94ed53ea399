"""The identity service: accounts, logins, and the JWKS every other service verifies with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2
from fastapi import FastAPI

from services.runtime import Runtime, build_app
from services.settings import ServiceSettings
from shop.identity.dependencies import IdentityRuntime
from shop.identity.router import router
from shop.identity.service import bootstrap_admin
from shop.kernel.security import JwksSource


def create_app(
    settings: ServiceSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings()
    identity = IdentityRuntime.from_settings(settings.identity)

    def local_jwks(_: Runtime) -> JwksSource:
        async def load() -> dict[str, Any]:
            return identity.keys.jwks()

        return load

    async def wire(app: FastAPI, runtime: Runtime) -> None:
        app.state.identity = identity
        runtime.stack.push_async_callback(identity.aclose)
        await bootstrap_admin(runtime.db, passwords=identity.passwords, settings=settings.identity)

    return build_app(
        "identity",
        settings=settings,
        transports=transports,
        routers=[router],
        calls=[],
        wire=wire,
        jwks=local_jwks,
    )
