"""Payments' endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from shop.kernel.db import Db, Session
from shop.kernel.errors import problems
from shop.kernel.pagination import Page, Paging
from shop.kernel.security import CurrentUser, internal_caller
from shop.payments import service
from shop.payments.dependencies import Payments
from shop.payments.models import PaymentStatus
from shop.payments.schemas import (
    ChargeCreate,
    ChargeRead,
    ChargeRequest,
    PaymentRead,
    RefundRequest,
)

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


internal_router = APIRouter(
    prefix="/internal/payments",
    tags=["internal"],
    include_in_schema=False,
    dependencies=[Depends(internal_caller)],
)
ChargeKey = Annotated[str, Path(min_length=1, max_length=255, description="Idempotency key")]


@internal_router.put("/charges/{key}", response_model=ChargeRead, responses=problems(409, 422))
async def internal_charge(key: ChargeKey, body: ChargeRequest, db: Db, payments: Payments) -> Any:
    """Charge once per key (a replay returns the first outcome, charging nothing more)."""
    payment = await service.create_payment(
        db,
        processor=payments.processor,
        data=ChargeCreate(idempotency_key=key, **body.model_dump()),
        claim_expiry=payments.claim_expiry,
    )
    return ChargeRead(key=key, status=PaymentStatus(payment.status))


@internal_router.get("/charges/{key}", response_model=ChargeRead, responses=problems(404))
async def internal_charge_status(key: ChargeKey, session: Session) -> Any:
    """The outcome recorded for a key (``pending`` while in flight); 404 if none reached us."""
    return ChargeRead(key=key, status=await service.get_charge_status(session, key=key))


@internal_router.post("/charges/{key}/refund", response_model=ChargeRead)
async def internal_refund(key: ChargeKey, body: RefundRequest, db: Db, payments: Payments) -> Any:
    """Refund the key's charge, or void the key if its charge has no outcome yet (idempotent)."""
    status = await service.refund_payment(
        db,
        processor=payments.processor,
        idempotency_key=key,
        order_id=body.order_id,
        user_id=body.user_id,
    )
    return ChargeRead(key=key, status=status)
