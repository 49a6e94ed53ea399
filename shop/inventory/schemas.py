"""Inventory's API schemas."""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import Field

from shop.inventory.models import ReservationStatus
from shop.kernel.types import Count, InputModel, IntId, OutputModel, Quantity


class StockItemRead(OutputModel):
    product_id: int
    on_hand: int
    reserved: int
    available: int


class StockUpdate(InputModel):
    on_hand: Count


class ReservationLineIn(InputModel):
    product_id: IntId
    quantity: Quantity


class ReservationCreate(InputModel):
    lines: list[ReservationLineIn] = Field(min_length=1, max_length=100)


class ReservationRead(OutputModel):
    reservation_id: uuid.UUID
    status: ReservationStatus | None = Field(description="null: no such reservation")


class ReservationAction(StrEnum):
    COMMIT = "commit"
    RELEASE = "release"
    RETURN = "return"
