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

import contextlib
import hashlib
import hmac
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    CheckoutInProgress,
    CheckoutInterrupted,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    OrderLimitExceeded,
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


def _request_hash(data: OrderCreate, settings: OrdersSettings) -> str:
    """The request's fingerprint: a keyed HMAC, so the card number in the body cannot be
    recovered from the stored value by trying the few numbers an issuer prefix leaves."""
    if settings.fingerprint_key is None:
        raise RuntimeError("OrdersSettings.with_fingerprint_key() was not applied")
    key = settings.fingerprint_key.get_secret_value().encode()
    return hmac.new(key, data.model_dump_json().encode(), hashlib.sha256).hexdigest()


def _replay(order: Order, request_hash: str) -> StoredResponse:
    # An empty fingerprint is an order from before fingerprints were keyed (its unkeyed
    # hash was erased): its replays are not compared.
    if order.request_hash and not hmac.compare_digest(order.request_hash, request_hash):
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request body."
        )
    if order.response_status is None or order.response_body is None:
        raise IdempotencyKeyInFlight(
            "A checkout with this Idempotency-Key is still in progress; retry shortly."
        )
    return StoredResponse(order.response_status, order.response_body)


class LeaseLost(Exception):
    """Someone else (recovery, in this replica or another) runs this order's saga now."""


@dataclass(frozen=True)
class _Runner:
    """One run of an order's saga, holding the order's lease while it acts.

    Every step is recorded together with a renewal of the lease, and the order is finished
    only by the lease's holder: two runners (a request and recovery, perhaps in two
    replicas) never finish one order two ways.
    """

    db: Database
    order_id: uuid.UUID
    term: timedelta
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)

    async def hold(
        self, step: SagaStep | None = None, *, status: OrderStatus = OrderStatus.PENDING
    ) -> None:
        """Take or renew the lease (recording ``step``); :class:`LeaseLost` if someone holds it."""
        now = utcnow()
        async with self.db.writer() as session, session.begin():
            held = await repository.take_lease(
                session,
                self.order_id,
                owner=self.owner,
                status=status,
                until=now + self.term,
                now=now,
                step=step,
            )
        if not held:
            raise LeaseLost(self.order_id)

    async def release(self) -> None:
        async with self.db.writer() as session, session.begin():
            await repository.drop_lease(session, self.order_id, owner=self.owner)

    async def finish(
        self, status: OrderStatus, *, error: ShopError | None = None
    ) -> StoredResponse:
        """End the saga: the final status, and the response stored for replays."""
        async with self.db.writer() as session, session.begin():
            now = utcnow()
            # The conditional update locks the row (PostgreSQL) before it is read: a racing
            # finisher waits, then finds the order finished or its lease gone.
            held = await repository.take_lease(
                session,
                self.order_id,
                owner=self.owner,
                status=OrderStatus.PENDING,
                until=now,
                now=now,
            )
            order = await repository.get_order(session, self.order_id)
            assert order is not None
            if not held:
                if order.response_status is not None and order.response_body is not None:
                    return StoredResponse(order.response_status, order.response_body)
                raise LeaseLost(self.order_id)
            order.status = status.value
            order.saga_step = SagaStep.FINISHED.value
            if status is OrderStatus.CONFIRMED:
                order.confirmed_at = utcnow()
            order.lease_owner = order.lease_expires_at = None
            # Set explicitly (and not to the lease's ``now``, which the row holds already, so
            # the ORM would see no change and apply ``onupdate``): the replayed body shows
            # exactly what the row holds.
            order.updated_at = utcnow()
            if error is None:
                response = StoredResponse(
                    201, OrderRead.model_validate(order).model_dump(mode="json")
                )
            else:
                order.failure_reason = error.slug
                response = StoredResponse(error.status, problem_body(error))
            order.response_status = response.status_code
            order.response_body = response.body
            return response


async def create_order(
    db: Database,
    *,
    ports: CheckoutPorts,
    settings: OrdersSettings,
    user_id: uuid.UUID,
    idempotency_key: str,
    data: OrderCreate,
) -> StoredResponse:
    """Check out the user's cart, once per idempotency key.

    Takes the database rather than a session: the saga commits after every step.
    """
    request_hash = _request_hash(data, settings)
    answered = await _answer_of_key(db, user_id, idempotency_key, request_hash)
    if answered is not None:
        return answered

    term = timedelta(seconds=settings.recovery_grace_seconds)
    try:
        order = await _new_order(ports, settings, user_id, idempotency_key, request_hash, data)
    except CartEmpty:
        # A duplicate of this request may have checked the cart out since the lookup above:
        # it stores its order before it empties the cart, so the key shows it now.
        answered = await _answer_of_key(db, user_id, idempotency_key, request_hash)
        if answered is not None:
            return answered
        raise
    runner = _Runner(db, order.id, term)
    order.lease_owner, order.lease_expires_at = runner.owner, utcnow() + term
    async with db.writer() as session, session.begin():
        if not await repository.add(session, order):
            raced = await repository.get_by_key(session, user_id, idempotency_key)
            if raced is not None:
                return _replay(raced, request_hash)
            raise CheckoutInProgress(
                "Another checkout of yours is still in progress; retry once it has finished."
            )
    try:
        return await _run_saga(runner, ports, order, data.card_number)
    except LeaseLost:
        # Recovery took the checkout over (this run stalled past its lease): its answer is
        # the answer, and a retry of the key gets it once it is there.
        answered = await _answer_of_key(db, user_id, idempotency_key, request_hash)
        assert answered is not None, "an unfinished key raises IdempotencyKeyInFlight"
        return answered
    except Exception:
        logger.exception("checkout %s failed unexpectedly; finishing it now", order.id)
        # Under this run's own lease: if that fails too, recovery waits for the lease to end.
        await _recover_quietly(ports, runner)
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
    settings: OrdersSettings,
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
    over = sorted(
        line.product_id for line in sold if line.quantity > settings.max_units_per_product
    )
    if over:
        raise OrderLimitExceeded(
            f"An order holds at most {settings.max_units_per_product} units of one product;"
            f" lower the quantity of product(s) {', '.join(map(str, over))} in the cart.",
            product_ids=over,
        )
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
    runner: _Runner, ports: CheckoutPorts, order: Order, card_number: str
) -> StoredResponse:
    lines = [CartLine(product_id=line.product_id, quantity=line.quantity) for line in order.lines]
    try:
        await ports.stock.reserve(order.id, lines)
    except OutOfStock as exc:
        return await runner.finish(OrderStatus.REJECTED, error=exc)
    await runner.hold(SagaStep.RESERVED)

    key = payment_key(order.id)
    charge: ChargeStatus | None = await ports.payments.charge(
        key=key,
        order_id=order.id,
        user_id=order.user_id,
        amount=order.total,
        card_number=card_number,
    )
    if charge is ChargeStatus.PENDING:
        charge = await _outcome_of_charge(runner, ports, key)
    if charge is not ChargeStatus.CAPTURED:
        await runner.hold()
        await ports.stock.release(order.id)
        return await runner.finish(OrderStatus.REJECTED, error=_charge_error(charge))
    await runner.hold(SagaStep.CHARGED)

    await ports.stock.commit(order.id)
    response = await runner.finish(OrderStatus.CONFIRMED)
    await _empty_cart(ports, order)
    return response


CHARGE_POLL_SECONDS = 0.25


async def _outcome_of_charge(
    runner: _Runner, ports: CheckoutPorts, key: str
) -> ChargeStatus | None:
    """Wait, holding the lease, for an earlier attempt's charge to reach an outcome.

    Payments settles a claim that outlived its expiry when it is asked, so this ends.
    """
    while True:
        await anyio.sleep(CHARGE_POLL_SECONDS)
        await runner.hold()
        charge = await ports.payments.status(key)
        if charge is not ChargeStatus.PENDING:
            return charge


async def _empty_cart(ports: CheckoutPorts, order: Order) -> None:
    try:
        await ports.cart.remove(order.user_id, [line.product_id for line in order.lines])
    except Exception:
        # The order stands; a cart left full is a nuisance, not a loss.
        logger.exception("order %s confirmed but its cart could not be emptied", order.id)


async def resume_pending_orders(db: Database, *, ports: CheckoutPorts, term: timedelta) -> int:
    """Finish checkouts and cancellations nobody runs any more (a crash mid-saga).

    An order is taken over only once its lease ran out with no step recorded; how many were.
    """
    async with db.reader() as session:
        unattended = await repository.list_unattended(session, now=utcnow())
    done = 0
    for order_id in unattended:
        done += await _recover(ports, _Runner(db, order_id, term))
    return done


async def recovery_loop(db: Database, *, ports: CheckoutPorts, settings: OrdersSettings) -> None:
    """Finish checkouts a crash left pending, now and then, for as long as the app runs."""
    term = timedelta(seconds=settings.recovery_grace_seconds)
    while True:
        try:
            count = await resume_pending_orders(db, ports=ports, term=term)
            if count:
                logger.warning("finished %d interrupted checkout(s)", count)
        except Exception:
            logger.exception("checkout recovery failed; retrying later")
        await anyio.sleep(settings.recovery_interval_seconds)


async def _recover(ports: CheckoutPorts, runner: _Runner) -> bool:
    """Go on with an order's saga from its recorded step; True if it was finished now."""
    order_id = runner.order_id
    async with runner.db.reader() as session:
        order = await repository.get_order(session, order_id)
    if order is None:
        return False
    if order.status == OrderStatus.CONFIRMED.value and order.saga_step == SagaStep.CANCELLING:
        try:
            await runner.hold(status=OrderStatus.CONFIRMED)
        except LeaseLost:
            return False
        await _cancel(runner, ports, order)
        logger.warning("recovered cancellation of order %s", order_id)
        return True
    try:
        await runner.hold()
    except LeaseLost:
        return False  # finished meanwhile, or someone else runs it
    key = payment_key(order_id)
    # Once the charge is recorded captured, the checkout only goes forward.
    charge = (
        ChargeStatus.CAPTURED
        if order.saga_step == SagaStep.CHARGED
        else await ports.payments.status(key)
    )
    if charge is ChargeStatus.PENDING:
        await runner.release()  # still with the card processor: next time
        return False
    if charge is ChargeStatus.CAPTURED:
        await ports.stock.commit(order_id)
        await runner.finish(OrderStatus.CONFIRMED)
        await _empty_cart(ports, order)
        logger.warning("recovered checkout %s: confirmed", order_id)
        return True
    if charge is None:
        # Never charged, as far as payments knows: void the key so that a charge call
        # still in flight somewhere cannot land after this decision.
        await ports.payments.refund(key=key, order_id=order_id, user_id=order.user_id)
    await ports.stock.release(order_id)
    await runner.finish(OrderStatus.REJECTED, error=_charge_error(charge))
    logger.warning("recovered checkout %s: rejected (payment %s)", order_id, charge)
    return True


def _charge_error(charge: ChargeStatus | None) -> ShopError:
    """Why a checkout whose charge did not capture is rejected."""
    if charge is ChargeStatus.TIMED_OUT:
        return PaymentTimeout("The card processor did not answer in time; nothing was charged.")
    if charge is ChargeStatus.DECLINED:
        return PaymentDeclined("The card was declined; nothing was charged.")
    return CheckoutInterrupted(
        "The checkout was interrupted and nothing was charged; check out again."
    )


async def _recover_quietly(ports: CheckoutPorts, runner: _Runner) -> None:
    try:
        await _recover(ports, runner)
    except Exception:
        logger.exception("checkout %s stays pending until recovery takes it", runner.order_id)


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
    db: Database,
    *,
    ports: CheckoutPorts,
    settings: OrdersSettings,
    principal: Principal,
    order_id: uuid.UUID,
) -> Order:
    """Cancel a confirmed order: refund it and put its stock back. Idempotent.

    The intent is recorded first (saga step ``cancelling``), so a cancellation that a crash
    interrupts is completed by recovery instead of leaving a refunded order confirmed.
    """
    async with db.reader() as session:
        order = await get_order(session, principal=principal, order_id=order_id)
    if order.status == OrderStatus.CANCELLED.value:
        return order
    if order.status != OrderStatus.CONFIRMED.value:
        raise OrderNotCancellable(f"A {order.status} order cannot be cancelled.")
    window = timedelta(seconds=settings.cancellation_window_seconds)
    confirmed_at = order.confirmed_at or order.updated_at
    if order.saga_step != SagaStep.CANCELLING and utcnow() - confirmed_at > window:
        raise OrderNotCancellable(
            f"An order can be cancelled within {_duration(window)} of its confirmation;"
            " this one was confirmed earlier."
        )
    runner = _Runner(db, order.id, timedelta(seconds=settings.recovery_grace_seconds))
    # LeaseLost: cancelled meanwhile, or another cancel runs; every step below is idempotent.
    with contextlib.suppress(LeaseLost):
        await runner.hold(SagaStep.CANCELLING, status=OrderStatus.CONFIRMED)
    await _cancel(runner, ports, order)
    async with db.reader() as session:
        return await get_order(session, principal=principal, order_id=order_id)


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


async def _cancel(runner: _Runner, ports: CheckoutPorts, order: Order) -> None:
    """The cancellation's steps, each idempotent, then the status."""
    await ports.payments.refund(key=payment_key(order.id), order_id=order.id, user_id=order.user_id)
    await ports.stock.restock(order.id)
    async with runner.db.writer() as session, session.begin():
        await repository.finish_cancellation(session, order.id)
