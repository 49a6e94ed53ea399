"""The shop's gateway: ``gateway.app.create_app`` with the table the contexts declare.

uvicorn --factory composition.gateway:create_app     (or: python -m gateway serve)

The gateway package knows no context; this is where its route table comes from: each public
prefix a context declares, to the service the topology gives that context
(:func:`composition.routes.routes`). ``GATEWAY_ROUTES`` replaces the table (a gateway in
front of something else than the shop, as its benchmark runs it).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from fastapi import FastAPI

from composition.routes import routes
from gateway import app
from gateway.settings import GatewaySettings
from shop.kernel.topology import load


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    settings = settings or GatewaySettings()
    table = None if settings.routes is not None else routes(load(settings.topology))
    return app.create_app(settings, transports=transports, routes=table)
