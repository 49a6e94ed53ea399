"""Cart's tables (prefix ``cart_``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Integer, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shop.kernel.db import UtcDateTime, make_metadata, utcnow


class Base(DeclarativeBase):
    metadata = make_metadata()


class CartLine(Base):
    __tablename__ = "cart_lines"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    product_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    quantity: Mapped[int] = mapped_column(Integer)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
