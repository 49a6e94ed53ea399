"""Inventory's tables (prefix ``inventory_``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shop.kernel.db import UtcDateTime, make_metadata, utcnow
from shop.kernel.events import outbox_table


class Base(DeclarativeBase):
    metadata = make_metadata()


class StockItem(Base):
    __tablename__ = "inventory_items"
    # The database itself refuses an oversold row, whatever the code above it does.
    __table_args__ = (
        CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("reserved <= on_hand", name="reserved_within_on_hand"),
    )

    product_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"
    RETURNED = "returned"


class ReservationLine(Base):
    """One product's units held for one reservation (a checkout, keyed by its order id)."""

    __tablename__ = "inventory_reservations"
    __table_args__ = (UniqueConstraint("reservation_id", "product_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reservation_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    product_id: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ReservationStatus.RESERVED.value)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


outbox = outbox_table(Base.metadata, "inventory")
"""The events inventory publishes (:mod:`shop.inventory.events`), recorded with each change."""
