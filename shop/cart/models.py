"""Cart's tables (prefix ``cart_``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Column, Integer, String, Table, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shop.kernel.db import UtcDateTime, make_metadata, utcnow
from shop.kernel.events import inbox_table


class Base(DeclarativeBase):
    metadata = make_metadata()


class CartLine(Base):
    __tablename__ = "cart_lines"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    product_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    quantity: Mapped[int] = mapped_column(Integer)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


inbox = inbox_table(Base.metadata, "cart")
"""The events the cart has applied to its read model, once each."""

products = Table(
    "cart_products",
    Base.metadata,
    Column("product_id", Integer, primary_key=True, autoincrement=False),
    # Unknown until a catalog.ProductChanged arrives (a deletion may come first).
    Column("name", String(200), nullable=True),
    Column("price_amount", Integer, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("deleted", Boolean, nullable=False),
    Column("sequence", BigInteger, nullable=False),
)
"""The catalog's products as its last event about each said (a read model:
:mod:`shop.cart.readmodels`); ``sequence`` is that event's, so an older one never
overwrites it."""
