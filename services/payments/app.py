"""The payments service: the fake card processor, charges and refunds."""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from fastapi import FastAPI

from services.runtime import Runtime, build_app
from services.settings import ServiceSettings
from shop.payments.dependencies import PaymentsRuntime
from shop.payments.router import internal_router, router


def create_app(
    settings: ServiceSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings()

    async def wire(app: FastAPI, _: Runtime) -> None:
        app.state.payments = PaymentsRuntime.from_settings(settings.payments)

    return build_app(
        "payments",
        settings=settings,
        transports=transports,
        routers=[router, internal_router],
        calls=[],
        wire=wire,
    )
