"""Cart's API schemas."""

from __future__ import annotations

from pydantic import BaseModel

from shop.kernel.types import InputModel, Money, Quantity


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
