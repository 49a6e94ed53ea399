"""Orders' tables (prefix ``orders_``). An order row is also its checkout saga's state."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shop.kernel.db import UtcDateTime, make_metadata, utcnow
from shop.kernel.events import outbox_table
from shop.kernel.types import Money


class Base(DeclarativeBase):
    metadata = make_metadata()


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class SagaStep(StrEnum):
    """How far the order's saga got (``Order.saga_step``), written by the update that takes,
    renews or drops the order's lease.

    A run that goes on with a checkout (the client's retry, which carries the card, once
    the run before died) starts at the recorded step. Recovery has no card, so it never
    reserves or charges: of the steps it reads only ``charged`` and ``cancelling``; at
    ``started`` or ``reserved`` it asks payments what became of the charge.
    """

    STARTED = "started"
    """The order is stored; its stock may or may not be reserved (reserving is idempotent)."""
    RESERVED = "reserved"
    """The stock is reserved; recorded before the charge is first asked for."""
    CHARGED = "charged"
    """Payment captured: from here the checkout only goes forward, to confirmed (recovery
    commits the stock and confirms without asking payments)."""
    FINISHED = "finished"
    """The saga ended; the status says how. Nothing branches on it: it is written in the
    same update as the final status, so that no finished order shows an unfinished step."""
    CANCELLING = "cancelling"
    """A confirmed order's cancellation began (refund, then restock): recovery lists such
    orders and completes them, and a repeated cancel completes it past the window."""


class Order(Base):
    __tablename__ = "orders_orders"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        # One checkout in flight per customer: parallel checkouts on a slow card cannot
        # hold the whole stock. The database decides, so racing requests cannot both pass.
        Index(
            "uq_orders_orders_one_pending_per_user",
            "user_id",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    saga_step: Mapped[str] = mapped_column(String(16))
    total_amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    shipping_address: Mapped[dict[str, Any]] = mapped_column(JSON)
    card_last4: Mapped[str] = mapped_column(String(4))
    failure_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The lease of whoever runs the saga now (a request, or recovery in some replica): only
    # the holder records steps or finishes the order, and recovery takes over an order only
    # once its lease ran out without being renewed.
    lease_owner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The first answer to this idempotency key, replayed verbatim to every retry.
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", lazy="selectin", order_by="OrderLine.id"
    )

    @property
    def total(self) -> Money:
        return Money(amount=self.total_amount, currency=self.currency)

    @property
    def items(self) -> list[OrderLine]:
        return self.lines


class OrderLine(Base):
    """A product as it was sold: name and unit price are copied at checkout."""

    __tablename__ = "orders_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders_orders.id"), index=True)
    product_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    unit_amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    quantity: Mapped[int] = mapped_column(Integer)

    order: Mapped[Order] = relationship(back_populates="lines")

    @property
    def unit_price(self) -> Money:
        return Money(amount=self.unit_amount, currency=self.currency)

    @property
    def line_total(self) -> Money:
        return Money(amount=self.unit_amount * self.quantity, currency=self.currency)


outbox = outbox_table(Base.metadata, "orders")
"""The events orders publishes (:mod:`shop.orders.events`), recorded with each change."""
