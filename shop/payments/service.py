"""Payments' rules: charge once per idempotency key, refund, list."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from shop.kernel.db import Database
from shop.kernel.security import Principal
from shop.kernel.types import SHOP_CURRENCY
from shop.payments import repository
from shop.payments.exceptions import ProcessorTimeout
from shop.payments.models import Payment, PaymentStatus
from shop.payments.processor import Authorization, FakeCardProcessor
from shop.payments.schemas import ChargeCreate


async def get_payment_by_key(session: AsyncSession, *, idempotency_key: str) -> Payment | None:
    return await repository.get_by_key(session, idempotency_key)


async def create_payment(
    db: Database, *, processor: FakeCardProcessor, data: ChargeCreate
) -> Payment:
    """Charge the card once per idempotency key and record the outcome.

    The processor is called outside any transaction (it may take seconds), so this takes
    the database rather than a session. A replayed key returns the recorded payment.
    """
    async with db.reader() as session:
        existing = await repository.get_by_key(session, data.idempotency_key)
    if existing is not None:
        return existing
    try:
        outcome = await processor.authorize(data.card_number, data.amount.amount)
        status = (
            PaymentStatus.CAPTURED if outcome is Authorization.APPROVED else PaymentStatus.DECLINED
        )
    except ProcessorTimeout:
        status = PaymentStatus.TIMED_OUT
    payment = Payment(
        id=uuid.uuid4(),
        idempotency_key=data.idempotency_key,
        order_id=data.order_id,
        user_id=data.user_id,
        amount=data.amount.amount,
        currency=data.amount.currency,
        status=status.value,
        card_last4=data.card_number[-4:],
    )
    async with db.writer() as session, session.begin():
        if not await repository.add(session, payment):
            recorded = await repository.get_by_key(session, data.idempotency_key)
            assert recorded is not None
            return recorded
    return payment


async def refund_payment(
    session: AsyncSession, *, idempotency_key: str, order_id: uuid.UUID, user_id: uuid.UUID
) -> PaymentStatus:
    """Refund the key's charge; idempotent. With no charge yet, void the key instead.

    A compensation may overtake a slow charge call: the void marker makes that late
    charge find the key taken and charge nothing.
    """
    if await repository.mark_refunded(session, idempotency_key):
        return PaymentStatus.REFUNDED
    existing = await repository.get_by_key(session, idempotency_key)
    if existing is not None:
        return PaymentStatus(existing.status)
    void = Payment(
        id=uuid.uuid4(),
        idempotency_key=idempotency_key,
        order_id=order_id,
        user_id=user_id,
        amount=0,
        currency=SHOP_CURRENCY,
        status=PaymentStatus.VOIDED.value,
        card_last4="",
    )
    if await repository.add(session, void):
        return PaymentStatus.VOIDED
    return await refund_payment(
        session, idempotency_key=idempotency_key, order_id=order_id, user_id=user_id
    )


async def list_payments(
    session: AsyncSession,
    *,
    principal: Principal,
    order_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> Sequence[Payment]:
    """The caller's payments; an admin sees everyone's."""
    return await repository.list_payments(
        session,
        user_id=None if principal.is_admin else principal.user_id,
        order_id=order_id,
        limit=limit,
        offset=offset,
    )
