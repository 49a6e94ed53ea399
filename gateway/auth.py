"""The access-token check at the edge.

A request that carries ``Authorization`` is verified with the same
:class:`~shop.kernel.security.TokenVerifier` every service uses, against the JWKS that
identity publishes, so the gateway rejects exactly what a service would reject, before any
upstream is called. A request without ``Authorization`` passes: public endpoints work, and
a protected one gets its 401 from the service.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from fastapi.security.utils import get_authorization_scheme_param

from shop.kernel.errors import ServiceUnavailable, Unauthorized
from shop.kernel.http import Upstream, UpstreamTimeout, UpstreamUnavailable, expect
from shop.kernel.security import JwksSource, TokenVerifier, jwks_document

JWKS_PATH = "/.well-known/jwks.json"
REMEMBER_SECONDS = 60.0
REMEMBER_TOKENS = 10_000


def jwks_source(identity: Upstream | None) -> JwksSource:
    """Identity's published keys, through its upstream (its breakers, its timeouts).

    A document that is not a JWKS is a bad upstream response (502), not a bug of ours.
    """

    async def load() -> dict[str, Any]:
        if identity is None:
            raise UpstreamUnavailable(f"No route serves {JWKS_PATH}: tokens cannot be checked.")
        response = await identity.request(
            "GET", JWKS_PATH, idempotent=True, headers={"Accept": "application/json"}
        )
        return expect(response, 200, read=jwks_document)

    return load


class EdgeAuth:
    """Verifies bearer tokens; the JWKS is loaded on the first token and on key rotation.

    A token that verified is remembered until it expires, and at most ``remember_seconds``:
    verifying an EdDSA token costs about as much CPU as the whole proxy hop (docs/gateway.md),
    and a client sends the same token with every request. Only successes are remembered,
    keyed by the whole token, so a token that differs by one byte is verified afresh; and
    with the key that verified it, so a token whose key was retired (it left the JWKS the
    verifier loads every ``jwks_max_age_seconds``) is refused at once.
    """

    def __init__(
        self,
        load_jwks: Callable[[], Awaitable[dict[str, Any]]],
        *,
        issuer: str,
        audience: str,
        remember_seconds: float = REMEMBER_SECONDS,
        remember_tokens: int = REMEMBER_TOKENS,
        jwks_max_age_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load_jwks = load_jwks
        self._issuer = issuer
        self._audience = audience
        self._loaded = False
        self._jwks_max_age = jwks_max_age_seconds
        self._verifier = self._new_verifier()
        self._remember_seconds = remember_seconds
        self._remember_tokens = remember_tokens
        self._clock = clock
        # token -> (remembered until, the kid of the key that verified it)
        self._verified: dict[str, tuple[float, str]] = {}
        self.verifications = 0
        """How many tokens were verified cryptographically (the rest were remembered)."""

    def _new_verifier(self) -> TokenVerifier:
        return TokenVerifier(
            self._load,
            issuer=self._issuer,
            audience=self._audience,
            max_age_seconds=self._jwks_max_age,
        )

    async def _load(self) -> dict[str, Any]:
        document = await self._load_jwks()
        self._loaded = True
        return document

    async def check(self, authorization: str) -> None:
        """Return if the header holds a valid bearer token; raise the problem to answer.

        :class:`~shop.kernel.errors.Unauthorized` (401) for any token a service would refuse,
        :class:`~shop.kernel.errors.ServiceUnavailable` (503) while the keys cannot be had.
        """
        # The same parsing as the services' HTTPBearer dependency.
        scheme, token = get_authorization_scheme_param(authorization)
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("The Authorization header must hold a bearer access token.")
        now = self._clock()
        remembered = self._verified.get(token)
        if remembered is not None:
            await self._verifier.refresh_if_stale()
            until, kid = remembered
            if now < until and self._verifier.knows(kid):
                return
            del self._verified[token]
        verifier = self._verifier
        try:
            self.verifications += 1
            await verifier.verify(token)
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            if not self._loaded and verifier is self._verifier:
                # The verifier throttles JWKS loads (one per 30 s) even when a load fails:
                # before any key was ever loaded that would turn an identity outage at
                # start-up into 30 s of 401s, so start afresh and try again next time.
                self._verifier = self._new_verifier()
            raise ServiceUnavailable(
                "Access tokens cannot be checked right now: the signing keys are unavailable."
            ) from exc
        if self._remember_seconds > 0:
            self._remember(token, now)

    def _remember(self, token: str, now: float) -> None:
        # The verifier accepted the token, so its header names a kid and its claims parse
        # and hold a numeric exp.
        expires = jwt.decode(token, options={"verify_signature": False})["exp"]
        kid = str(jwt.get_unverified_header(token)["kid"])
        if len(self._verified) >= self._remember_tokens:
            # Forget the oldest entry (dicts keep insertion order): bounded memory under a
            # flood of distinct valid tokens.
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (min(float(expires), now + self._remember_seconds), kid)
