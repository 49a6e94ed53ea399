"""The gateway's composition root: ``create_app()`` builds the edge of the services topology.

uvicorn --factory gateway.app:create_app     (or: python -m gateway serve)

It imports no bounded context: routes come from the topology file, tokens are checked
against identity's published JWKS, and the OpenAPI document is merged from the services'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import Receive, Scope, Send

from gateway.proxy import ProxyMiddleware
from gateway.runtime import Gateway
from gateway.settings import GatewaySettings
from shop.kernel.docs import oauth2_redirect_page, swagger_page
from shop.kernel.edge import install_edge
from shop.kernel.errors import ServiceUnavailable, install_error_handlers, problems
from shop.kernel.ops import Health, Readiness
from shop.kernel.topology import load, parse_replicas

# The monolith's title, summary and version: the merged document must read like its own.
TITLE = "shopkata"
SUMMARY = "An online shop: identity, catalog, inventory, cart, orders, payments."
VERSION = "0.1.0"
INFO = {"title": TITLE, "summary": SUMMARY, "version": VERSION}

router = APIRouter(tags=["ops"])


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses=problems(503))
async def readyz(request: Request) -> Readiness:
    """The gateway can serve: every upstream service has a ready replica.

    Public, so it names no service and no error: the gateway logs which upstream is down
    and why, and each service's own /readyz (on its own port, never routed) has its checks.
    """
    if not await _gateway(request).ready():
        raise ServiceUnavailable("Not ready: an upstream service is unavailable.")
    return Readiness(checks={"upstreams": "ok"})


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    """The shop's OpenAPI document, merged from the services' documents."""
    document, missing = await _gateway(request).openapi(request.app.openapi())
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

    def __init__(self, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state.gateway = gateway
        self._proxy = ProxyMiddleware(super().__call__, gateway=gateway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._proxy(scope, receive, send)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """The gateway for ``settings.topology`` (settings from the environment by default).

    ``transports`` maps service names to httpx2 transports (tests pass
    ``httpx2.ASGITransport(app=...)``); with it the proxy uses its httpx2 client on them,
    otherwise the client ``settings.client`` names.
    """
    settings = settings or GatewaySettings()
    topology = load(settings.topology)
    if settings.replicas:
        topology = topology.with_replicas(parse_replicas(settings.replicas))
    gateway = Gateway(settings, topology, transports=transports, info=INFO)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    # openapi_url=None: /openapi.json is the merged document, served by the route above.
    app = GatewayApp(
        gateway,
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
