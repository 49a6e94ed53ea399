"""Payments' API schemas."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from shop.kernel.types import InputModel, Money, OutputModel
from shop.payments.models import PaymentStatus


class PaymentRead(OutputModel):
    id: uuid.UUID
    order_id: uuid.UUID
    amount: Money = Field(validation_alias="money")
    status: PaymentStatus
    card_last4: str
    created_at: datetime
    refunded_at: datetime | None


class ChargeRequest(InputModel):
    """A charge request from orders (the card number is never stored)."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Money
    card_number: str = Field(pattern=r"^[0-9]{12,19}$")


class ChargeCreate(ChargeRequest):
    """A charge request with its idempotency key."""

    idempotency_key: str = Field(min_length=1, max_length=255)


class ChargeRead(OutputModel):
    key: str
    status: PaymentStatus


class RefundRequest(InputModel):
    order_id: uuid.UUID
    user_id: uuid.UUID
