"""Identity: accounts, sign-in, and the keys every other context verifies tokens with."""

from __future__ import annotations

import logging
from typing import Any

from shop.identity.dependencies import IdentityRuntime
from shop.identity.router import router
from shop.identity.service import bootstrap_admin
from shop.identity.settings import IdentitySettings
from shop.kernel.context import Context, Runtime

logger = logging.getLogger("shop.identity")


async def start(runtime: Runtime) -> None:
    settings = runtime.settings(IdentitySettings)
    identity = IdentityRuntime.from_settings(settings)
    runtime.stack.push_async_callback(identity.aclose)
    runtime.state.identity = identity

    async def jwks() -> dict[str, Any]:
        return identity.keys.jwks()

    runtime.jwks = jwks
    if await bootstrap_admin(runtime.db, passwords=identity.passwords, settings=settings):
        logger.info("bootstrap admin %s ready", settings.bootstrap_admin_email)


CONTEXT = Context(
    name="identity",
    router=router,
    prefixes=("/auth", "/users", "/.well-known"),
    start=start,
)
