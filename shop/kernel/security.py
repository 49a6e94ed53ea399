"""Access-token verification against a JWKS, shared by every deployable.

Identity signs EdDSA (Ed25519) JWTs; anything that holds the JWKS can verify them, so a
service never calls identity per request. The verifier is made in a lifespan and kept on
``app.state.token_verifier``; the dependencies below read it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shop.kernel.errors import Forbidden, Unauthorized
from shop.kernel.http import CLIENT_ADDRESS_HEADER, EDGE_TOKEN_HEADER, INTERNAL_TOKEN_HEADER

ALGORITHM = "EdDSA"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
"""The JOSE ``typ`` of an access token (RFC 9068, section 2.1)."""
_ACCESS_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, f"application/{ACCESS_TOKEN_TYPE}"})
logger = logging.getLogger("shop.security")

JwksSource = Callable[[], Awaitable[dict[str, Any]]]
"""Loads the current JWKS document (in process, or over HTTP with its own caching)."""


def jwks_document(body: Any) -> dict[str, Any]:
    """A JWKS as an upstream sent it, checked for shape: an object with a ``keys`` list.

    Raises ``TypeError`` otherwise (read through :func:`shop.kernel.http.expect`, a 502).
    """
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise TypeError("a JWKS is an object with a list of keys")
    return body


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified claims of the access token."""

    user_id: uuid.UUID
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class TokenVerifier:
    """Verifies access tokens with PyJWT against keys found by ``kid`` in a JWKS.

    ``load_jwks`` is asked again when a token names an unknown ``kid`` (key rotation; after
    a load that did not have the kid asked for, not again for ``min_refresh_seconds``), and
    when the keys loaded are older than
    ``max_age_seconds`` (key retirement: a key that left the JWKS stops verifying within that
    time; while the JWKS cannot be had, the keys already loaded stay in use).

    Only access tokens pass: the JOSE header must say ``typ: at+jwt`` (RFC 9068), so no
    other JWT signed with the same key can stand in for one.

    A token that verified is remembered (up to ``max_remembered`` of them) until it expires:
    an EdDSA check cost about 200 us, on every authenticated request of every service. A
    remembered token still stops passing at its ``exp`` (same leeway), and at once when its
    key leaves the JWKS.
    """

    def __init__(
        self,
        load_jwks: JwksSource,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: int = 5,
        min_refresh_seconds: float = 30.0,
        max_age_seconds: float = 300.0,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
        max_remembered: int = 10_000,
    ) -> None:
        self._load_jwks = load_jwks
        self._keys: dict[str, jwt.PyJWK] = {}
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._clock = clock or time.monotonic
        self._loaded_at: float | None = None
        self._missed_at: float | None = None  # the last load without the kid it was for
        self._refreshing = asyncio.Lock()
        self._wall_clock = wall_clock
        self._max_remembered = max_remembered
        # token -> (its principal, its exp, the kid of the key that verified it)
        self._remembered: dict[str, tuple[Principal, float, str]] = {}

    @staticmethod
    def _usable_keys(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
        """The Ed25519 signing keys of a JWKS; entries this shop cannot use are skipped."""
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            if not isinstance(entry, dict):
                continue
            kid = entry.get("kid")
            usable = (
                entry.get("kty") == "OKP"
                and entry.get("crv") == "Ed25519"
                and entry.get("alg", ALGORITHM) == ALGORITHM
                and entry.get("use", "sig") == "sig"
            )
            if not usable or not isinstance(kid, str):
                continue
            try:
                keys[kid] = jwt.PyJWK(entry, algorithm=ALGORITHM)
            except jwt.PyJWTError:
                continue
        return keys

    async def _refresh(self, kid: str) -> None:
        # One load at a time, and none for min_refresh after a load that did not have the kid
        # asked for: a burst of tokens naming unknown keys must not turn into a burst of JWKS
        # requests. A recent load that simply predates a rotation does not hold the new key
        # back (the periodic reloads of max_age would otherwise delay every rotation).
        async with self._refreshing:
            now = self._clock()
            if kid in self._keys or (
                self._missed_at is not None and now - self._missed_at < self._min_refresh
            ):
                return
            # A load that fails raises (the caller answers 503) and is not counted: the next
            # request tries again, so an identity outage is never mistaken for a bad token.
            document = await self._load_jwks()
            self._keys = self._usable_keys(document)
            self._loaded_at = now
            if kid not in self._keys:
                self._missed_at = now

    def knows(self, kid: str) -> bool:
        """Whether the keys loaded last include ``kid`` (a key that left the JWKS does not)."""
        return kid in self._keys

    async def refresh_if_stale(self) -> None:
        """Load the JWKS again when the keys are older than ``max_age_seconds``.

        One caller loads while the others go on with the keys they have; a load that fails
        keeps them and is tried again after ``min_refresh_seconds``.
        """
        if self._loaded_at is None or self._refreshing.locked():
            return
        if self._clock() - self._loaded_at < self._max_age:
            return
        async with self._refreshing:
            if self._clock() - self._loaded_at < self._max_age:
                return
            try:
                document = await self._load_jwks()
            except Exception as exc:
                # Whatever the outage, keep verifying with the keys we have.
                logger.warning("JWKS reload failed, keeping the loaded keys: %r", exc)
                self._loaded_at = self._clock() - self._max_age + self._min_refresh
                return
            self._keys = self._usable_keys(document)
            self._loaded_at = self._clock()

    async def _key_for(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys:
            await self._refresh(kid)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("The access token was signed by an unknown key.")
        return key

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`Unauthorized` for anything else."""
        await self.refresh_if_stale()
        remembered = self._remembered.get(token)
        if remembered is not None:
            principal, expires, kid = remembered
            # PyJWT's own rule: expired once exp <= now - leeway.
            if expires > self._wall_clock() - self._leeway and kid in self._keys:
                return principal
            del self._remembered[token]
        principal, expires, kid = await self._verify(token)
        if len(self._remembered) >= self._max_remembered:
            del self._remembered[next(iter(self._remembered))]  # the oldest
        self._remembered[token] = (principal, expires, kid)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is malformed.") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("The access token uses an algorithm this shop does not accept.")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES:
            raise Unauthorized(
                f"The token is not an access token: its type (typ) must be {ACCESS_TOKEN_TYPE}."
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("The access token has no key id.")
        key = await self._key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The access token is not valid: {exc}.") from exc
        try:
            principal = Principal(
                user_id=uuid.UUID(claims["sub"]), role=Role(str(claims.get("role")))
            )
            return principal, float(claims["exp"]), kid
        except (ValueError, TypeError) as exc:
            raise Unauthorized("The access token has invalid claims.") from exc


_bearer = HTTPBearer(auto_error=False, description="An access token from POST /auth/token")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("This operation needs a bearer access token.")
    verifier = getattr(request.app.state, "token_verifier", None)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("app.state.token_verifier is not set: create the app with its lifespan")
    return await verifier.verify(credentials.credentials)


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This operation is reserved to administrators.")
    return principal


async def internal_caller(request: Request) -> None:
    """Only another service of the shop may call: it proves it with the shared token.

    The gateway strips this header from every client request and never routes /internal.
    """
    expected = getattr(request.app.state, "internal_token", None)
    given = request.headers.get(INTERNAL_TOKEN_HEADER, "")
    if not isinstance(expected, str) or not expected:
        raise RuntimeError("app.state.internal_token is not set")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("This endpoint is for the shop's own services.")


async def client_address(request: Request) -> str:
    """The address the caller connected from, as the edge saw it.

    Behind the gateway every request comes from the gateway, so the gateway tells the
    service its caller's address in ``X-Shop-Client-Address``, proved by
    ``X-Shop-Edge-Token`` (``SHOP_EDGE_TOKEN``, shared by the gateway and the services
    only). It strips both headers from what clients send, and without the token the header is
    ignored: a client cannot choose the address it is counted under. Otherwise the address is
    the connection's own peer (uvicorn runs without proxy headers: ``X-Forwarded-For`` is
    not trusted either).
    """
    expected = getattr(request.app.state, "edge_token", "")
    forwarded = request.headers.get(CLIENT_ADDRESS_HEADER)
    if forwarded and isinstance(expected, str) and expected:
        given = request.headers.get(EDGE_TOKEN_HEADER, "")
        if hmac.compare_digest(given.encode(), expected.encode()):
            try:
                return str(ipaddress.ip_address(forwarded.strip()))
            except ValueError:
                pass  # the gateway writes an address; anything else is not believed
    return request.client.host if request.client else "unknown"


CurrentUser = Annotated[Principal, Depends(current_principal)]
"""Any authenticated caller."""
AdminUser = Annotated[Principal, Depends(admin_principal)]
"""An authenticated administrator; customers get 403."""
ClientAddress = Annotated[str, Depends(client_address)]
"""The caller's network address (the gateway's caller, behind the gateway)."""
