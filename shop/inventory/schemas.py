"""Inventory's API schemas."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import Field

from shop.kernel.types import MAX_INT32, InputModel, IntId, OutputModel, Quantity


class StockItemRead(OutputModel):
    product_id: int
    on_hand: int
    reserved: int
    available: int


class StockUpdate(InputModel):
    on_hand: Annotated[int, Field(ge=0, le=MAX_INT32)]


class ReservationLineIn(InputModel):
    product_id: IntId
    quantity: Quantity


class ReservationRead(OutputModel):
    reservation_id: uuid.UUID
    status: str
    lines: list[ReservationLineIn]
