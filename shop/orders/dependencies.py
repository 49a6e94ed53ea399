"""Orders' request dependencies."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Path

from shop.kernel.ports import provide
from shop.orders.exceptions import IdempotencyKeyMissing
from shop.orders.ports import CheckoutPorts

Ports = Annotated[CheckoutPorts, Depends(provide(CheckoutPorts))]
OrderId = Annotated[uuid.UUID, Path(description="An order id")]


def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="A unique key per checkout attempt (1-255 printable ASCII characters)",
        ),
    ] = None,
) -> str:
    if key is None or not 1 <= len(key) <= 255 or not all(33 <= ord(c) <= 126 for c in key):
        raise IdempotencyKeyMissing(
            "POST /orders needs an Idempotency-Key header of 1-255 printable ASCII characters."
        )
    return key


IdempotencyKey = Annotated[str, Depends(idempotency_key)]
