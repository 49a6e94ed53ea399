"""Payments' rules: charge once per idempotency key, refund, list.

A charge captured and a charge refunded are recorded (:mod:`shop.payments.events`) in the
transaction that records the transition, once each: a replay records nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from shop.kernel.db import Database, utcnow
from shop.kernel.events import record
from shop.kernel.security import Principal
from shop.kernel.types import SHOP_CURRENCY
from shop.payments import repository
from shop.payments.events import PaymentCaptured, PaymentRefunded
from shop.payments.exceptions import PaymentInFlight, PaymentNotFound, ProcessorTimeout
from shop.payments.models import Payment, PaymentStatus, outbox
from shop.payments.processor import Authorization, FakeCardProcessor
from shop.payments.schemas import ChargeCreate

Fact = TypeVar("Fact", PaymentCaptured, PaymentRefunded)


async def create_payment(
    db: Database, *, processor: FakeCardProcessor, data: ChargeCreate, claim_expiry: timedelta
) -> Payment:
    """Charge the card once per idempotency key and record the outcome.

    The key is claimed first (a ``pending`` row, committed on its own, held until
    ``claim_expiry`` from now) and only then is the processor called, with the key as its
    idempotency key: a concurrent request with the key gets :class:`PaymentInFlight` and
    never reaches the processor. The processor may take seconds, so no transaction is held
    across the call. A replayed key returns the recorded payment. A claim whose holder died
    (payments restarted mid-call: the claim ran out unsettled) is taken over by the next
    request with the key, which asks the processor again under the same idempotency key, so
    the processor answers the first outcome instead of charging twice.
    """
    key = data.idempotency_key
    now = utcnow()
    claim = Payment(
        id=uuid.uuid4(),
        idempotency_key=key,
        order_id=data.order_id,
        user_id=data.user_id,
        amount=data.amount.amount,
        currency=data.amount.currency,
        status=PaymentStatus.PENDING.value,
        card_last4=data.card_number[-4:],
        claim_expires_at=now + claim_expiry,
    )
    async with db.writer() as session, session.begin():
        claimed = await repository.add(session, claim) or await repository.take_over_claim(
            session, key, now=now, until=now + claim_expiry
        )
        if not claimed:
            existing = await repository.get_by_key(session, key)
            assert existing is not None, "a claimed key is never deleted"
            if existing.status == PaymentStatus.PENDING.value:
                raise PaymentInFlight(
                    f"A charge with key {key!r} is in progress; ask for its outcome shortly."
                )
            return existing
    try:
        outcome = await processor.authorize(
            key=key, card_number=data.card_number, amount=data.amount.amount
        )
        status = (
            PaymentStatus.CAPTURED if outcome is Authorization.APPROVED else PaymentStatus.DECLINED
        )
    except ProcessorTimeout:
        # The processor may still authorize after its deadline: cancel whatever it does.
        await processor.reverse(key=key)
        status = PaymentStatus.TIMED_OUT
    async with db.writer() as session, session.begin():
        settled = await repository.settle(session, key, status)
        recorded = await repository.get_by_key(session, key)
        assert recorded is not None
        if settled and status is PaymentStatus.CAPTURED:
            await record(session, outbox, (str(recorded.id), _fact(PaymentCaptured, recorded)))
    if not settled and status is PaymentStatus.CAPTURED:
        # A void met the claim while the processor was authorizing: the void stands, so the
        # authorization is reversed (again: the void already asked for it).
        await processor.reverse(key=key)
    return recorded


async def get_charge(session: AsyncSession, *, key: str) -> Payment | None:
    """The payment recorded for ``key`` (``pending`` while a charge is with the processor)."""
    return await repository.get_by_key(session, key)


async def get_charge_status(session: AsyncSession, *, key: str) -> PaymentStatus:
    """The status recorded for ``key``; :class:`PaymentNotFound` if no charge reached us."""
    payment = await repository.get_by_key(session, key)
    if payment is None:
        raise PaymentNotFound(f"No charge was recorded for key {key!r}.")
    return PaymentStatus(payment.status)


async def refund_payment(
    db: Database,
    *,
    processor: FakeCardProcessor,
    idempotency_key: str,
    order_id: uuid.UUID,
    user_id: uuid.UUID,
) -> PaymentStatus:
    """Refund the key's charge; idempotent. With no charge yet, void the key instead.

    A compensation may overtake a charge: with no row yet, the void marker makes the late
    charge find the key taken; with the charge in flight (``pending``), the void wins and
    the key is reversed at the processor, so whatever the processor answers, nothing stays
    charged.
    """
    key = idempotency_key
    async with db.writer() as session, session.begin():
        refunded = await repository.mark_refunded(session, key)
        voided = not refunded and await repository.settle(session, key, PaymentStatus.VOIDED)
        existing = await repository.get_by_key(session, key)
        if existing is None:
            voided = await repository.add(session, _void_marker(key, order_id, user_id))
            existing = await repository.get_by_key(session, key)
        assert existing is not None
        status = PaymentStatus(existing.status)
        if refunded:
            await record(session, outbox, (str(existing.id), _fact(PaymentRefunded, existing)))
    if refunded:
        await processor.refund(key=key)
    elif voided:
        await processor.reverse(key=key)
    return status


def _fact(kind: type[Fact], payment: Payment) -> Fact:
    return kind(
        payment_id=payment.id,
        order_id=payment.order_id,
        amount=payment.amount,
        currency=payment.currency,
    )


def _void_marker(key: str, order_id: uuid.UUID, user_id: uuid.UUID) -> Payment:
    return Payment(
        id=uuid.uuid4(),
        idempotency_key=key,
        order_id=order_id,
        user_id=user_id,
        amount=0,
        currency=SHOP_CURRENCY,
        status=PaymentStatus.VOIDED.value,
        card_last4="",
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
