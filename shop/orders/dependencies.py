"""Orders' request dependencies."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import Depends, Path, Request

from shop.kernel.ports import provide
from shop.orders.exceptions import IdempotencyKeyMissing
from shop.orders.ports import CheckoutPorts
from shop.orders.settings import OrdersSettings

Ports = Annotated[CheckoutPorts, Depends(provide(CheckoutPorts))]


async def orders_settings(request: Request) -> OrdersSettings:
    settings = getattr(request.app.state, "orders_settings", None)
    if not isinstance(settings, OrdersSettings):
        raise RuntimeError("app.state.orders_settings is not set")
    return settings


Settings = Annotated[OrdersSettings, Depends(orders_settings)]
OrderId = Annotated[uuid.UUID, Path(description="An order id")]


IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# Printable ASCII, inner spaces allowed (HTTP trims the outer ones anyway).
_KEY_PATTERN = "^[!-~]([ -~]{0,253}[!-~])?$"

# Read by hand (not a FastAPI Header parameter) so that a missing or malformed key is the
# documented 400 idempotency-key-missing rather than a generic 422; documented here.
IDEMPOTENCY_KEY_OPENAPI = {
    "parameters": [
        {
            "name": IDEMPOTENCY_KEY_HEADER,
            "in": "header",
            "required": True,
            "description": "A unique key per checkout attempt; a retry with the same key and"
            " body replays the first answer.",
            "schema": {"type": "string", "pattern": _KEY_PATTERN},
        }
    ]
}


async def idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if key is None or not re.fullmatch(_KEY_PATTERN, key):
        raise IdempotencyKeyMissing(
            "POST /orders needs an Idempotency-Key header of 1-255 printable ASCII characters."
        )
    return key


IdempotencyKey = Annotated[str, Depends(idempotency_key)]
