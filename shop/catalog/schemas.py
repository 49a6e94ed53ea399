"""Catalog's API schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from shop.kernel.types import (
    MAX_INT32,
    InputModel,
    IntId,
    LongText,
    Money,
    MoneyIn,
    Name,
    OutputModel,
    ShortText,
    Slug,
)

Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class CategoryCreate(InputModel):
    slug: Slug
    name: Name


class CategoryRead(OutputModel):
    id: int
    slug: str
    name: str


class ProductCreate(InputModel):
    sku: Sku
    name: ShortText
    description: LongText = ""
    category_id: IntId
    price: MoneyIn


class ProductUpdate(InputModel):
    """Every field optional; only the fields sent with a value are changed (null: unchanged)."""

    name: ShortText | None = None
    description: LongText | None = None
    category_id: IntId | None = None
    price: MoneyIn | None = None


class ProductRead(OutputModel):
    id: int
    sku: str
    name: str
    description: str
    category_id: int
    price: Money
    created_at: datetime


class ProductDetail(ProductRead):
    available: int = Field(description="Units that can be ordered right now")


class CatalogEntry(OutputModel):
    """What other contexts need of a product: its name and current price."""

    product_id: int
    name: str
    price: Money


class ProductSort(StrEnum):
    ID = "id"
    NAME = "name"
    NAME_DESC = "-name"
    PRICE = "price"
    PRICE_DESC = "-price"
    NEWEST = "newest"


PriceBound = Annotated[int, Field(ge=0, le=MAX_INT32)]
