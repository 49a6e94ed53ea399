"""Identity's request dependencies: the objects its lifespan put on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from shop.identity.service import Passwords, password_hasher
from shop.identity.settings import IdentitySettings
from shop.identity.throttle import SignInThrottle
from shop.identity.tokens import SigningKeys, TokenIssuer, signing_keys


@dataclass(frozen=True)
class IdentityRuntime:
    """What identity needs at run time, built once per app from its settings."""

    passwords: Passwords
    keys: SigningKeys
    """The key that signs and the keys the JWKS publishes (a file's rotations included)."""
    issuer: TokenIssuer
    throttle: SignInThrottle
    """Failed sign-ins per account and per address (in memory, or Redis when configured)."""

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> IdentityRuntime:
        """Load the signing keys (fails fast when missing or exposed) and the password hasher."""
        keys = signing_keys(settings)
        return cls(
            passwords=Passwords(
                password_hasher(settings),
                max_concurrent=settings.max_concurrent_hashes,
                wait_seconds=settings.hash_wait_seconds,
            ),
            keys=keys,
            issuer=TokenIssuer(
                key=keys,
                issuer=settings.issuer,
                audience=settings.audience,
                ttl_seconds=settings.access_token_ttl_seconds,
            ),
            throttle=SignInThrottle.from_settings(settings),
        )

    async def aclose(self) -> None:
        """Close what the runtime holds open (the throttle's Redis connections)."""
        await self.throttle.store.aclose()


async def identity_runtime(request: Request) -> IdentityRuntime:
    runtime = getattr(request.app.state, "identity", None)
    if not isinstance(runtime, IdentityRuntime):
        raise RuntimeError("app.state.identity is not set: create the app with its lifespan")
    return runtime


Identity = Annotated[IdentityRuntime, Depends(identity_runtime)]
