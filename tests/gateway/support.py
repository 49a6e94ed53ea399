"""Test doubles for the gateway: small real upstream apps, transports, keys and tokens.

Nothing here imports a bounded context: the fake identity publishes a JWKS made with
cryptography, and tokens are signed with PyJWT, as any party holding a key could.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shop.kernel.errors import install_error_handlers

ISSUER = "shopkata"
AUDIENCE = "shopkata"
BASE_PORT = 9100


# --- keys and tokens ----------------------------------------------------------------------


@dataclass
class Keys:
    """An Ed25519 signing key and the JWKS that publishes it."""

    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def jwks(self) -> dict[str, Any]:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA"}
                | {"use": "sig"}
            ]
        }

    def token(self, **overrides: Any) -> str:
        """A valid access token; ``overrides`` replace claims (``None`` drops one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": str(uuid.uuid4()),
            "role": "customer",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(
            claims, self.private, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"}
        )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- upstream apps ------------------------------------------------------------------------


@dataclass
class Seen:
    """What an upstream app received: one entry per request."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]


def echo_app(
    name: str, *, ready: bool = True, jwks: dict[str, Any] | None = None
) -> tuple[FastAPI, Seen]:
    """An upstream that answers every path with what it received, plus a few behaviours.

    Paths ending in ``/slow`` sleep ``?seconds=``, ``/boom`` raise, ``/stream`` stream
    ``?size=`` bytes in ``?chunk=`` pieces, ``/status/<n>`` answer status n.
    """
    seen = Seen()
    app = FastAPI(title=name)
    install_error_handlers(app)
    app.state.ready = ready

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        if not request.app.state.ready:
            return JSONResponse({"status": "down"}, status_code=503)
        return JSONResponse({"status": "ready", "checks": {"database": "ok"}})

    if jwks is not None:

        @app.get("/.well-known/jwks.json")
        async def well_known() -> dict[str, Any]:
            seen.requests.append({"service": name, "path": "/.well-known/jwks.json"})
            return jwks

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(path: str, request: Request) -> Response:
        digest = hashlib.sha256()
        size = chunks = 0
        async for chunk in request.stream():
            if chunk:
                digest.update(chunk)
                size += len(chunk)
                chunks += 1
        record = {
            "service": name,
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
            "query": request.url.query,
            "client_port": request.client.port if request.client else None,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
            "body_sha256": digest.hexdigest(),
            "body_size": size,
            "body_chunks": chunks,
        }
        seen.requests.append(record)
        last = request.url.path.rsplit("/", 2)
        if last[-1] == "slow":
            await asyncio.sleep(float(request.query_params.get("seconds", "1")))
        elif last[-1] == "boom":
            raise RuntimeError("the upstream broke")
        elif last[-1] == "stream":
            total = int(request.query_params.get("size", "0"))
            piece = int(request.query_params.get("chunk", "65536"))

            async def body() -> AsyncIterator[bytes]:
                for start in range(0, total, piece):
                    yield bytes([start // piece % 251]) * min(piece, total - start)

            return StreamingResponse(
                body(), media_type="application/octet-stream", headers={"x-total": str(total)}
            )
        elif len(last) == 3 and last[-2] == "status":
            return JSONResponse(record, status_code=int(last[-1]))
        return JSONResponse(
            record,
            status_code=201 if request.method == "POST" else 200,
            headers={"x-upstream": name, "connection": "keep-alive", "keep-alive": "timeout=5"},
        )

    return app, seen


def identity_app(keys: Keys) -> tuple[FastAPI, Seen]:
    """A fake identity: its JWKS, and the echo for everything else under its routes."""
    return echo_app("identity", jwks=keys.jwks())


# --- transports ---------------------------------------------------------------------------


class ByPort(httpx2.AsyncBaseTransport):
    """One service's replicas, each its own transport, told apart by port (port + i)."""

    def __init__(self, replicas: Mapping[int, httpx2.AsyncBaseTransport]) -> None:
        self.replicas = dict(replicas)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = request.url.port
        assert port is not None
        return await self.replicas[port].handle_async_request(request)


class Switch(httpx2.AsyncBaseTransport):
    """A transport whose upstream can be taken down (connection refused) and back up."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, *, down: bool = False) -> None:
        self.inner = inner
        self.down = down
        self.attempts = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.attempts += 1
        if self.down:
            raise httpx2.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


# --- the gateway --------------------------------------------------------------------------


def write_topology(
    directory: Path,
    routes: Mapping[str, str],
    services: Mapping[str, int] | None = None,
    *,
    replicas: Mapping[str, int] | None = None,
) -> Path:
    """A topology file: ``services`` name -> port (default: one port per routed service)."""
    if services is None:
        names = dict.fromkeys(routes.values())
        services = {name: BASE_PORT + 10 * index for index, name in enumerate(names)}
    lines = ['name = "gateway-test"', 'description = "tests/gateway"', "[gateway]", "port = 9000"]
    for name, port in services.items():
        lines += [
            f"[services.{name}]",
            f'app = "tests:{name}"',
            f'contexts = ["{name}"]',
            f"port = {port}",
            f"replicas = {(replicas or {}).get(name, 1)}",
        ]
    path = directory / "topology.toml"
    path.write_text("\n".join(lines) + "\n")
    # A topology names no path: the gateway's table comes with its settings (GATEWAY_ROUTES).
    (directory / ROUTES_FILE).write_text(json.dumps(dict(routes)))
    return path


ROUTES_FILE = "routes.json"


def routes_of(topology: Path) -> dict[str, str]:
    """The routes :func:`write_topology` wrote beside ``topology``."""
    routes: dict[str, str] = json.loads((topology.parent / ROUTES_FILE).read_text())
    return routes


def settings(topology: Path, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "topology": topology,
        "routes": routes_of(topology),
        "replicas": "",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "read_timeout_seconds": 2.0,
        "readiness_timeout_seconds": 1.0,
        "breaker_threshold": 3,
        "breaker_reset_seconds": 0.2,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@asynccontextmanager
async def gateway_client(app: FastAPI, *upstreams: FastAPI) -> AsyncIterator[httpx2.AsyncClient]:
    """The gateway with its lifespan (and its upstreams'), reached over ASGI."""
    async with (
        _lifespans([app, *upstreams]),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://gateway.test", timeout=10
        ) as client,
    ):
        yield client


@asynccontextmanager
async def _lifespans(apps: list[FastAPI]) -> AsyncIterator[None]:
    if not apps:
        yield
        return
    async with apps[0].router.lifespan_context(apps[0]), _lifespans(apps[1:]):
        yield


def build(
    topology: Path,
    transports: Mapping[str, httpx2.AsyncBaseTransport],
    **overrides: Any,
) -> FastAPI:
    return create_app(settings(topology, **overrides), transports=transports)


def asgi(app: FastAPI) -> httpx2.ASGITransport:
    return httpx2.ASGITransport(app=app)


def header(record: Mapping[str, Any], name: str) -> list[str]:
    """Every value of a request header an upstream saw."""
    return [value for key, value in record["headers"] if key == name.lower()]
