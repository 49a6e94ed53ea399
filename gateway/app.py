"""Lifecycle: ``create_app()`` composes the gateway's layers into the edge of the services.

uvicorn --factory composition.gateway:create_app   (the shop's; or: python -m gateway serve)

It imports no bounded context: routes are given (the shop's are derived from the contexts'
declarations by ``composition.gateway``, or come from ``GATEWAY_ROUTES``),
tokens are checked against identity's published JWKS, and the OpenAPI document is merged
from the services'. The layers, each with one job (import-linter keeps them layered):

- :mod:`gateway.routing`: which service a path goes to;
- :mod:`gateway.auth`: the token check at the edge;
- :mod:`gateway.upstreams`: resilience, on the kernel's one HTTP stack;
- :mod:`gateway.openapi` and :mod:`gateway.readiness`: the merged document, readiness;
- :mod:`gateway.proxy`: the hot path that puts the first three together;
- this module: building them, the gateway's own endpoints, opening and closing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import JWKS_PATH, EdgeAuth, jwks_source
from gateway.openapi import OpenApi
from gateway.proxy import Proxy
from gateway.readiness import Readiness
from gateway.routing import Routes, is_internal
from gateway.settings import GatewaySettings
from gateway.upstreams import upstreams
from shop.kernel.docs import SUMMARY, TITLE, VERSION, oauth2_redirect_page, swagger_page
from shop.kernel.edge import BodyLimit, install_edge
from shop.kernel.errors import ServiceUnavailable, install_error_handlers, problems
from shop.kernel.http import Upstream
from shop.kernel.ops import Health
from shop.kernel.ops import Readiness as ReadinessAnswer
from shop.kernel.topology import load, parse_replicas

logger = logging.getLogger("gateway")

# The monolith's title, summary and version: the merged document must read like its own.
INFO = {"title": TITLE, "summary": SUMMARY, "version": VERSION}

router = APIRouter(tags=["ops"])


@dataclass(frozen=True)
class Gateway:
    """The gateway's parts, as ``app.state.gateway``."""

    routes: Routes
    upstreams: dict[str, Upstream]
    """By service name: every routed service, in topology order."""
    auth: EdgeAuth
    readiness: Readiness
    openapi: OpenApi

    async def aclose(self) -> None:
        """Close every upstream client and its pooled connections."""
        for upstream in self.upstreams.values():
            await upstream.aclose()


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", response_model=ReadinessAnswer, responses=problems(503))
async def readyz(request: Request) -> ReadinessAnswer:
    """The gateway can serve: every upstream service has a ready replica.

    Public, so it names no service and no error: the gateway logs which upstream is down
    and why, and each service's own /readyz (on its own port, never routed) has its checks.
    """
    if not await _gateway(request).readiness.ready():
        raise ServiceUnavailable("Not ready: an upstream service is unavailable.")
    return ReadinessAnswer(checks={"upstreams": "ok"})


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    """The shop's OpenAPI document, merged from the services' documents."""
    document, missing = await _gateway(request).openapi.document(request.app.openapi())
    # An incomplete document is still worth reading; the header says what it lacks.
    headers = {"X-OpenAPI-Missing": ", ".join(missing)} if missing else None
    return JSONResponse(document, headers=headers)


_DOCS = swagger_page(TITLE)
_OAUTH2_REDIRECT = oauth2_redirect_page()


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    """Swagger UI on the merged document (shop.kernel.docs: a strict CSP)."""
    return _DOCS


@router.get("/docs/oauth2-redirect", include_in_schema=False)
async def docs_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return _OAUTH2_REDIRECT


class GatewayApp(FastAPI):
    """The gateway's FastAPI app, with the proxy in front of all of it.

    FastAPI serves the gateway's own endpoints and renders its errors; a routed request is
    proxied before any of FastAPI's middleware runs, which is most of the per-request cost
    a proxy can avoid (docs/gateway.md).
    """

    def __init__(
        self, gateway: Gateway, proxy: Callable[[ASGIApp], ASGIApp], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.state.gateway = gateway
        self._proxy = proxy(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._proxy(scope, receive, send)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
    routes: Sequence[tuple[str, str]] | None = None,
) -> FastAPI:
    """The gateway for ``settings.topology`` (settings from the environment by default).

    ``transports`` maps service names to httpx2 transports (tests pass
    ``httpx2.ASGITransport(app=...)``); the other services are reached over sockets, on the
    socket transport. ``routes`` are ``(prefix, service)`` pairs; ``None`` takes
    ``settings.routes``. The gateway knows no context: the shop's own table is derived from
    the contexts' declarations by ``composition.gateway.create_app``, which calls this.
    """
    settings = settings or GatewaySettings()
    topology = load(settings.topology)
    if settings.replicas:
        topology = topology.with_replicas(parse_replicas(settings.replicas))
    if routes is None:
        if settings.routes is None:
            raise ValueError(
                "the gateway has no routes: serve composition.gateway:create_app (the shop's"
                " table, from the contexts' declarations) or set GATEWAY_ROUTES"
            )
        routes = tuple(settings.routes.items())
    table = Routes(routes)
    unknown = table.services - set(topology.services)
    if unknown:
        raise ValueError(f"routes name services the topology does not have: {sorted(unknown)}")
    # Only routed services are the gateway's upstreams (a topology may list others).
    services = {name: spec for name, spec in topology.services.items() if name in table.services}
    clients = upstreams(settings, services, transports)
    identity = table.service(JWKS_PATH)
    gateway = Gateway(
        routes=table,
        upstreams=clients,
        auth=EdgeAuth(
            jwks_source(None if identity is None else clients[identity]),
            issuer=settings.issuer,
            audience=settings.audience,
            remember_seconds=settings.verified_token_ttl_seconds,
            jwks_max_age_seconds=settings.jwks_max_age_seconds,
        ),
        readiness=Readiness(
            clients,
            timeout=settings.readiness_timeout_seconds,
            cache_seconds=settings.readiness_cache_seconds,
        ),
        openapi=OpenApi(
            clients,
            owner=table.service,
            info=INFO,
            is_hidden=is_internal,
            cache_seconds=settings.openapi_cache_seconds,
        ),
    )
    edge_token = settings.edge_token.get_secret_value().encode() if settings.edge_token else None
    if edge_token is None:
        logger.warning(
            "SHOP_EDGE_TOKEN is not set: the services cannot tell callers apart, and"
            " identity counts every failed sign-in under the gateway's own address"
        )
    proxy = functools.partial(
        Proxy,
        route=table.bind(clients),
        check_token=gateway.auth.check,
        body_limit=BodyLimit(settings.max_body_bytes),
        edge_token=edge_token,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gateway.aclose()

    # openapi_url=None: /openapi.json is the merged document, served by the route above.
    app = GatewayApp(
        gateway,
        proxy,
        title=TITLE,
        summary=SUMMARY,
        version=VERSION,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_edge(app, settings)
    app.include_router(router)
    return app
