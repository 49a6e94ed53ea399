"""Payments' tables (prefix ``payments_``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shop.kernel.db import UtcDateTime, make_metadata, utcnow
from shop.kernel.events import outbox_table
from shop.kernel.types import Money


class Base(DeclarativeBase):
    metadata = make_metadata()


class PaymentStatus(StrEnum):
    PENDING = "pending"
    """The key is claimed and the processor is being asked: the outcome is not known yet."""
    CAPTURED = "captured"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    REFUNDED = "refunded"
    VOIDED = "voided"
    """Refunded before any charge arrived: a later charge with the key is refused."""


class Payment(Base):
    __tablename__ = "payments_payments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # One charge per key: a retried charge finds the first one instead of charging again.
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    card_last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # While pending: until when the request that claimed the key holds it. A claim that
    # runs out unsettled belongs to a request that died; the next one with the key takes over.
    claim_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    @property
    def money(self) -> Money:
        return Money(amount=self.amount, currency=self.currency)


outbox = outbox_table(Base.metadata, "payments")
"""The events payments publishes (:mod:`shop.payments.events`), recorded with each change."""
