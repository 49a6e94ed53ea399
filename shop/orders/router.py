"""Orders' endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from shop.kernel.db import Db, Session
from shop.kernel.errors import PROBLEM_CONTENT_TYPE, problems
from shop.kernel.pagination import Page, Paging
from shop.kernel.security import CurrentUser
from shop.orders import service
from shop.orders.dependencies import (
    IDEMPOTENCY_KEY_OPENAPI,
    IdempotencyKey,
    OrderId,
    Ports,
    Settings,
)
from shop.orders.schemas import OrderCreate, OrderRead

router = APIRouter(tags=["orders"])


@router.post(
    "/orders",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    responses=problems(400, 401, 402, 409, 422, 503, 504),
    openapi_extra=IDEMPOTENCY_KEY_OPENAPI,
)
async def create_order(
    principal: CurrentUser,
    key: IdempotencyKey,
    body: OrderCreate,
    db: Db,
    ports: Ports,
    settings: Settings,
) -> JSONResponse:
    """Check out the caller's cart (replays the first answer for a repeated key)."""
    result = await service.create_order(
        db,
        ports=ports,
        settings=settings,
        user_id=principal.user_id,
        idempotency_key=key,
        data=body,
    )
    media_type = "application/json" if result.status_code < 400 else PROBLEM_CONTENT_TYPE
    return JSONResponse(result.body, status_code=result.status_code, media_type=media_type)


@router.get("/orders", response_model=Page[OrderRead], responses=problems(401, 422))
async def list_orders(principal: CurrentUser, session: Session, paging: Paging) -> Any:
    """The caller's orders, newest first."""
    rows = await service.list_orders(
        session, principal=principal, limit=paging.fetch, offset=paging.offset
    )
    return paging.page(rows)


@router.get("/orders/{order_id}", response_model=OrderRead, responses=problems(401, 404, 422))
async def get_order(order_id: OrderId, principal: CurrentUser, session: Session) -> Any:
    """One order: the caller's own (an admin: any)."""
    return await service.get_order(session, principal=principal, order_id=order_id)


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderRead,
    responses=problems(401, 404, 409, 422),
)
async def cancel_order(
    order_id: OrderId, principal: CurrentUser, db: Db, ports: Ports, settings: Settings
) -> Any:
    """Cancel a confirmed order: the payment is refunded and the stock goes back."""
    return await service.cancel_order(
        db, ports=ports, settings=settings, principal=principal, order_id=order_id
    )
