"""Cart's API schemas."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shop.kernel.types import InputModel, IntId, Money, OutputModel, Quantity


class CartItemUpdate(InputModel):
    quantity: Quantity


class CartItemRead(BaseModel):
    product_id: int
    name: str
    unit_price: Money
    quantity: int
    line_total: Money


class CartRead(BaseModel):
    items: list[CartItemRead]
    total: Money
    item_count: int


class CartLineRead(OutputModel):
    product_id: int
    quantity: int


class CartLinesRemove(InputModel):
    product_ids: list[IntId] = Field(max_length=1000)
