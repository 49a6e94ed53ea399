"""Orders' rules: checkout as an orchestrated saga, history, cancellation, recovery.

Checkout never holds a database transaction across a call to another context: each step
commits on its own, so the same code runs in the monolith (in-process adapters, one
database) and between services (HTTP adapters, a database each). The order row records
the saga's progress; :func:`resume_pending_orders` finishes or compensates a checkout
that a crash interrupted.

    reserve stock -> charge -> commit reservation -> confirm   (then empty the cart)
      | out of stock      | declined / timed out: release stock
      v                   v
    rejected            rejected
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from shop.kernel.db import Database, utcnow
from shop.kernel.errors import ShopError, problem_body
from shop.kernel.security import Principal
from shop.orders import repository
from shop.orders.exceptions import (
    CartEmpty,
    CheckoutInterrupted,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    OrderNotCancellable,
    OrderNotFound,
    OutOfStock,
    PaymentDeclined,
    PaymentTimeout,
)
from shop.orders.models import Order, OrderLine, OrderStatus, SagaStep
from shop.orders.ports import CartLine, ChargeStatus, CheckoutPorts
from shop.orders.schemas import OrderCreate, OrderRead
from shop.orders.settings import OrdersSettings

logger = logging.getLogger("shop.orders")


@dataclass(frozen=True)
class StoredResponse:
    """The answer to a checkout, kept with the order and replayed for its key."""

    status_code: int
    body: dict[str, Any]


def payment_key(order_id: uuid.UUID) -> str:
    """The payment's idempotency key: one charge per order, however often it is retried."""
    return f"order-{order_id}"


def _request_hash(data: OrderCreate) -> str:
    return hashlib.sha256(data.model_dump_json().encode()).hexdigest()


def _replay(order: Order, request_hash: str) -> StoredResponse:
    if order.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request body."
        )
    if order.response_status is None or order.response_body is None:
        raise IdempotencyKeyInFlight(
            "A checkout with this Idempotency-Key is still in progress; retry shortly."
        )
    return StoredResponse(order.response_status, order.response_body)


async def create_order(
    db: Database,
    *,
    ports: CheckoutPorts,
    user_id: uuid.UUID,
    idempotency_key: str,
    data: OrderCreate,
) -> StoredResponse:
    """Check out the user's cart, once per idempotency key.

    Takes the database rather than a session: the saga commits after every step.
    """
    request_hash = _request_hash(data)
    answered = await _answer_of_key(db, user_id, idempotency_key, request_hash)
    if answered is not None:
        return answered

    try:
        order = await _new_order(ports, user_id, idempotency_key, request_hash, data)
    except CartEmpty:
        # A duplicate of this request may have checked the cart out since the lookup above:
        # it stores its order before it empties the cart, so the key shows it now.
        answered = await _answer_of_key(db, user_id, idempotency_key, request_hash)
        if answered is not None:
            return answered
        raise
    async with db.writer() as session, session.begin():
        if not await repository.add(session, order):
            raced = await repository.get_by_key(session, user_id, idempotency_key)
            assert raced is not None
            return _replay(raced, request_hash)
    try:
        return await _run_saga(db, ports, order, data.card_number)
    except Exception:
        logger.exception("checkout %s failed unexpectedly; finishing it now", order.id)
        await _recover_quietly(db, ports, order.id)
        raise


async def _answer_of_key(
    db: Database, user_id: uuid.UUID, idempotency_key: str, request_hash: str
) -> StoredResponse | None:
    """The stored answer of a checkout already made with this key (or its refusal), if any."""
    async with db.reader() as session:
        existing = await repository.get_by_key(session, user_id, idempotency_key)
    return None if existing is None else _replay(existing, request_hash)


async def _new_order(
    ports: CheckoutPorts,
    user_id: uuid.UUID,
    idempotency_key: str,
    request_hash: str,
    data: OrderCreate,
) -> Order:
    """A pending order with the cart's lines at today's prices."""
    lines = await ports.cart.lines(user_id)
    prices = await ports.prices.prices([line.product_id for line in lines])
    sold = [line for line in lines if line.product_id in prices]
    if not sold:
        raise CartEmpty("The cart is empty: add products before checking out.")
    currency = prices[sold[0].product_id].price.currency
    order_lines = [
        OrderLine(
            product_id=line.product_id,
            name=prices[line.product_id].name,
            unit_amount=prices[line.product_id].price.amount,
            currency=prices[line.product_id].price.currency,
            quantity=line.quantity,
        )
        for line in sold
    ]
    return Order(
        id=uuid.uuid4(),
        user_id=user_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        status=OrderStatus.PENDING.value,
        saga_step=SagaStep.STARTED.value,
        total_amount=sum(line.unit_amount * line.quantity for line in order_lines),
        currency=currency,
        shipping_address=data.shipping_address.model_dump(mode="json"),
        card_last4=data.card_number[-4:],
        lines=order_lines,
    )


async def _run_saga(
    db: Database, ports: CheckoutPorts, order: Order, card_number: str
) -> StoredResponse:
    lines = [CartLine(product_id=line.product_id, quantity=line.quantity) for line in order.lines]
    try:
        await ports.stock.reserve(order.id, lines)
    except OutOfStock as exc:
        return await _finish(db, order.id, OrderStatus.REJECTED, error=exc)
    await _record_step(db, order.id, SagaStep.RESERVED)

    charge = await ports.payments.charge(
        key=payment_key(order.id),
        order_id=order.id,
        user_id=order.user_id,
        amount=order.total,
        card_number=card_number,
    )
    if charge is not ChargeStatus.CAPTURED:
        await ports.stock.release(order.id)
        return await _finish(db, order.id, OrderStatus.REJECTED, error=_charge_error(charge))
    await _record_step(db, order.id, SagaStep.CHARGED)

    await ports.stock.commit(order.id)
    response = await _finish(db, order.id, OrderStatus.CONFIRMED)
    await _empty_cart(ports, order)
    return response


async def _empty_cart(ports: CheckoutPorts, order: Order) -> None:
    try:
        await ports.cart.remove(order.user_id, [line.product_id for line in order.lines])
    except Exception:
        # The order stands; a cart left full is a nuisance, not a loss.
        logger.exception("order %s confirmed but its cart could not be emptied", order.id)


async def _record_step(db: Database, order_id: uuid.UUID, step: SagaStep) -> None:
    async with db.writer() as session, session.begin():
        order = await repository.get_order(session, order_id)
        assert order is not None
        order.saga_step = step.value
        order.updated_at = utcnow()


async def _finish(
    db: Database, order_id: uuid.UUID, status: OrderStatus, *, error: ShopError | None = None
) -> StoredResponse:
    """End the saga: set the final status and store the response for replays."""
    async with db.writer() as session, session.begin():
        order = await repository.get_order(session, order_id)
        assert order is not None
        if order.status != OrderStatus.PENDING.value:
            # Someone (recovery) finished it first; its answer stands.
            assert order.response_status is not None
            assert order.response_body is not None
            return StoredResponse(order.response_status, order.response_body)
        order.status = status.value
        order.saga_step = SagaStep.FINISHED.value
        # Set explicitly, so the replayed body shows exactly what the row holds.
        order.updated_at = utcnow()
        if error is None:
            response = StoredResponse(201, OrderRead.model_validate(order).model_dump(mode="json"))
        else:
            order.failure_reason = error.slug
            response = StoredResponse(error.status, problem_body(error))
        order.response_status = response.status_code
        order.response_body = response.body
        return response


async def resume_pending_orders(
    db: Database, *, ports: CheckoutPorts, older_than: timedelta
) -> int:
    """Finish or compensate checkouts left pending (a crash mid-saga); how many were."""
    async with db.reader() as session:
        stale = await repository.list_pending(session, updated_before=utcnow() - older_than)
    for order_id in stale:
        await _recover(db, ports, order_id)
    return len(stale)


async def recovery_loop(db: Database, *, ports: CheckoutPorts, settings: OrdersSettings) -> None:
    """Finish checkouts a crash left pending, now and then, for as long as the app runs."""
    grace = timedelta(seconds=settings.recovery_grace_seconds)
    while True:
        try:
            count = await resume_pending_orders(db, ports=ports, older_than=grace)
            if count:
                logger.warning("finished %d interrupted checkout(s)", count)
        except Exception:
            logger.exception("checkout recovery failed; retrying later")
        await anyio.sleep(settings.recovery_interval_seconds)


async def _recover(db: Database, ports: CheckoutPorts, order_id: uuid.UUID) -> None:
    """Decide a pending order by what payments recorded: captured means it goes through."""
    charge = await ports.payments.status(payment_key(order_id))
    if charge is ChargeStatus.CAPTURED:
        await ports.stock.commit(order_id)
        await _finish(db, order_id, OrderStatus.CONFIRMED)
        async with db.reader() as session:
            order = await repository.get_order(session, order_id)
        assert order is not None
        await _empty_cart(ports, order)
        logger.warning("recovered checkout %s: confirmed", order_id)
        return
    if charge is None:
        # Never charged, as far as payments knows: void the key so that a charge call
        # still in flight somewhere cannot land after this decision.
        async with db.reader() as session:
            order = await repository.get_order(session, order_id)
        assert order is not None
        await ports.payments.refund(
            key=payment_key(order_id), order_id=order_id, user_id=order.user_id
        )
    await ports.stock.release(order_id)
    await _finish(db, order_id, OrderStatus.REJECTED, error=_charge_error(charge))
    logger.warning("recovered checkout %s: rejected (payment %s)", order_id, charge)


def _charge_error(charge: ChargeStatus | None) -> ShopError:
    """Why a checkout whose charge did not capture is rejected."""
    if charge is ChargeStatus.TIMED_OUT:
        return PaymentTimeout("The card processor did not answer in time; nothing was charged.")
    if charge is ChargeStatus.DECLINED:
        return PaymentDeclined("The card was declined; nothing was charged.")
    return CheckoutInterrupted(
        "The checkout was interrupted and nothing was charged; check out again."
    )


async def _recover_quietly(db: Database, ports: CheckoutPorts, order_id: uuid.UUID) -> None:
    try:
        await _recover(db, ports, order_id)
    except Exception:
        logger.exception("checkout %s stays pending until the next recovery run", order_id)


async def get_order(session: AsyncSession, *, principal: Principal, order_id: uuid.UUID) -> Order:
    """The order if the caller may see it: its owner, or an admin."""
    order = await repository.get_order(session, order_id)
    if order is None or (order.user_id != principal.user_id and not principal.is_admin):
        raise OrderNotFound(f"There is no order {order_id} of yours.")
    return order


async def list_orders(
    session: AsyncSession, *, principal: Principal, limit: int, offset: int
) -> Sequence[Order]:
    return await repository.list_orders(session, principal.user_id, limit=limit, offset=offset)


async def cancel_order(
    db: Database, *, ports: CheckoutPorts, principal: Principal, order_id: uuid.UUID
) -> Order:
    """Cancel a confirmed order: refund it and put its stock back. Idempotent."""
    async with db.reader() as session:
        order = await get_order(session, principal=principal, order_id=order_id)
    if order.status == OrderStatus.CANCELLED.value:
        return order
    if order.status != OrderStatus.CONFIRMED.value:
        raise OrderNotCancellable(f"A {order.status} order cannot be cancelled.")
    # Both steps are idempotent, so a cancel interrupted here is finished by a retry.
    await ports.payments.refund(key=payment_key(order.id), order_id=order.id, user_id=order.user_id)
    await ports.stock.restock(order.id)
    async with db.writer() as session, session.begin():
        await repository.set_status(
            session, order.id, old=OrderStatus.CONFIRMED, new=OrderStatus.CANCELLED
        )
    async with db.reader() as session:
        return await get_order(session, principal=principal, order_id=order_id)
