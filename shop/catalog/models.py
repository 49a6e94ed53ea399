"""Catalog's tables (prefix ``catalog_``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shop.kernel.db import UtcDateTime, make_metadata, utcnow
from shop.kernel.events import inbox_table, outbox_table
from shop.kernel.types import Money


class Base(DeclarativeBase):
    metadata = make_metadata()


class Category(Base):
    __tablename__ = "catalog_categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))


class Product(Base):
    __tablename__ = "catalog_products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    category_id: Mapped[int] = mapped_column(ForeignKey("catalog_categories.id"), index=True)
    price_amount: Mapped[int] = mapped_column(Integer, index=True)
    currency: Mapped[str] = mapped_column(String(3))
    # Deleting a product archives it: orders and carts may still name it.
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    @property
    def price(self) -> Money:
        return Money(amount=self.price_amount, currency=self.currency)


outbox = outbox_table(Base.metadata, "catalog")
"""The events catalog publishes (:mod:`shop.catalog.events`), recorded with each change."""

inbox = inbox_table(Base.metadata, "catalog")
"""The events catalog has applied to its read models, once each."""

stock_levels = Table(
    "catalog_stock_levels",
    Base.metadata,
    Column("product_id", Integer, primary_key=True, autoincrement=False),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False),
    Column("available", Integer, nullable=False),
    Column("sequence", BigInteger, nullable=False),
)
"""Inventory's stock numbers per product, as its last ``inventory.StockChanged`` said (a read
model: :mod:`shop.catalog.readmodels`); ``sequence`` is that event's, so an older one
never overwrites it."""
