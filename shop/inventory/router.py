"""Inventory's endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from shop.inventory import service
from shop.inventory.dependencies import Products
from shop.inventory.schemas import (
    ReservationAction,
    ReservationCreate,
    ReservationRead,
    StockItemRead,
    StockUpdate,
)
from shop.kernel.db import Db, Session
from shop.kernel.errors import problems
from shop.kernel.security import AdminUser, internal_caller
from shop.kernel.types import MAX_INT32

router = APIRouter(tags=["inventory"])

ProductId = Annotated[int, Path(ge=1, le=MAX_INT32, description="A product id")]


@router.get("/inventory/{product_id}", response_model=StockItemRead, responses=problems(404, 422))
async def get_item(product_id: ProductId, session: Session) -> Any:
    """Stock of one product: on hand, reserved by checkouts in progress, available."""
    return await service.get_item(session, product_id=product_id)


@router.put(
    "/inventory/{product_id}",
    response_model=StockItemRead,
    responses=problems(401, 403, 404, 409, 422),
)
async def update_item(
    product_id: ProductId, body: StockUpdate, db: Db, products: Products, _: AdminUser
) -> Any:
    """Set the units on hand of a product (admin)."""
    return await service.update_item(
        db, product_id=product_id, on_hand=body.on_hand, products=products
    )


internal_router = APIRouter(
    prefix="/internal/inventory",
    tags=["internal"],
    include_in_schema=False,
    dependencies=[Depends(internal_caller)],
)
ReservationId = Annotated[uuid.UUID, Path(description="The reservation (the order's id)")]


@internal_router.get("/available", response_model=dict[int, int])
async def internal_available(
    session: Session, ids: Annotated[list[int], Query(max_length=1000)]
) -> dict[int, int]:
    """Units available per product id (0 without a stock record)."""
    return await service.list_available(session, product_ids=ids)


@internal_router.put("/reservations/{reservation_id}", response_model=ReservationRead)
async def internal_reserve(
    reservation_id: ReservationId, body: ReservationCreate, session: Session
) -> ReservationRead:
    """Hold every line or none (409 out-of-stock); replaying the same id holds nothing more."""
    status = await service.create_reservation(
        session,
        reservation_id=reservation_id,
        lines=[(line.product_id, line.quantity) for line in body.lines],
    )
    return ReservationRead(reservation_id=reservation_id, status=status)


@internal_router.post("/reservations/{reservation_id}/{action}", response_model=ReservationRead)
async def internal_transition(
    reservation_id: ReservationId, action: ReservationAction, session: Session
) -> ReservationRead:
    """commit (sold), release (back to available) or return (sold units back on hand)."""
    status = await service.update_reservation(session, reservation_id=reservation_id, action=action)
    return ReservationRead(reservation_id=reservation_id, status=status)
