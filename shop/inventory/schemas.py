"""Inventory's API schemas."""

from __future__ import annotations

from shop.kernel.types import Count, InputModel, OutputModel


class StockItemRead(OutputModel):
    product_id: int
    on_hand: int
    reserved: int
    available: int


class StockUpdate(InputModel):
    on_hand: Count
