"""Payments' endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from shop.kernel.db import Session
from shop.kernel.errors import problems
from shop.kernel.pagination import Page, Paging
from shop.kernel.security import CurrentUser
from shop.payments import service
from shop.payments.schemas import PaymentRead

router = APIRouter(tags=["payments"])


@router.get("/payments", response_model=Page[PaymentRead], responses=problems(401, 422))
async def list_payments(
    principal: CurrentUser,
    session: Session,
    paging: Paging,
    order_id: Annotated[uuid.UUID | None, Query(description="Only this order's payments")] = None,
) -> Any:
    """The caller's payments, newest first (an admin: everyone's)."""
    rows = await service.list_payments(
        session, principal=principal, order_id=order_id, limit=paging.fetch, offset=paging.offset
    )
    return paging.page(rows)
