"""Payments' queries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.payments.models import Payment, PaymentStatus


async def get_by_key(session: AsyncSession, idempotency_key: str) -> Payment | None:
    result = await session.scalars(
        select(Payment).where(Payment.idempotency_key == idempotency_key)
    )
    return result.one_or_none()


async def add(session: AsyncSession, payment: Payment) -> bool:
    """Insert ``payment``; False when its idempotency key was recorded meanwhile."""
    try:
        async with session.begin_nested():
            session.add(payment)
            await session.flush()
    except IntegrityError:
        return False
    return True


async def take_over_claim(
    session: AsyncSession, idempotency_key: str, *, now: datetime, until: datetime
) -> bool:
    """Hold a pending claim whose holder ran out of time (it died mid-call) until ``until``."""
    result = await session.execute(
        update(Payment)
        .where(
            Payment.idempotency_key == idempotency_key,
            Payment.status == PaymentStatus.PENDING.value,
            Payment.claim_expires_at < now,
        )
        .values(claim_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def settle(session: AsyncSession, idempotency_key: str, status: PaymentStatus) -> bool:
    """Record the outcome of the key's pending claim; False if it was settled already."""
    result = await session.execute(
        update(Payment)
        .where(
            Payment.idempotency_key == idempotency_key,
            Payment.status == PaymentStatus.PENDING.value,
        )
        .values(status=status.value, claim_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_refunded(session: AsyncSession, idempotency_key: str) -> int:
    """Refund the key's payment if it was captured; how many were refunded now."""
    result = await session.execute(
        update(Payment)
        .where(
            Payment.idempotency_key == idempotency_key,
            Payment.status == PaymentStatus.CAPTURED.value,
        )
        .values(status=PaymentStatus.REFUNDED.value, refunded_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def list_payments(
    session: AsyncSession,
    *,
    user_id: uuid.UUID | None,
    order_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> Sequence[Payment]:
    # A void marker is bookkeeping and a pending claim has no outcome yet: neither is a
    # payment the customer made.
    query = select(Payment).where(
        Payment.status.not_in([PaymentStatus.VOIDED.value, PaymentStatus.PENDING.value])
    )
    if user_id is not None:
        query = query.where(Payment.user_id == user_id)
    if order_id is not None:
        query = query.where(Payment.order_id == order_id)
    query = query.order_by(Payment.created_at.desc(), Payment.id).limit(limit).offset(offset)
    return (await session.scalars(query)).all()
