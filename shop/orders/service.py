"""Orders' rules: checkout as an orchestrated saga, history, cancellation, recovery.

Checkout never holds a database transaction across a call to another context: each step
commits on its own, so the same code runs in the monolith (in-process adapters, one
database) and between services (HTTP adapters, a database each). The order row records
the saga's progress (``saga_step``): a client's retry goes on with a checkout whose run
died from its recorded step, and :func:`resume_pending_orders` finishes or compensates
the checkouts and cancellations that nobody runs any more. Each status an order takes
(placed pending, confirmed, rejected, cancelled) is recorded as an
:class:`~shop.orders.events.OrderStatusChanged` in the transaction that sets it.

    reserve stock -> charge -> commit reservation -> confirm   (then empty the cart)
      | out of stock      | declined / timed out: release stock
      v                   v
    rejected            rejected
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from shop.kernel.db import Database, utcnow
from shop.kernel.errors import ServiceUnavailable, ShopError, problem_body
from shop.kernel.events import record
from shop.kernel.http import UpstreamTimeout
from shop.kernel.security import Principal
from shop.orders import repository
from shop.orders.events import CANCEL_REQUESTED, OrderStatusChanged
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
from shop.orders.models import Order, OrderLine, OrderStatus, SagaStep, outbox
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


def _same_request(order: Order, request_hash: str) -> None:
    """Refuse a key used again with another body (422)."""
    # An empty fingerprint is an order from before fingerprints were keyed (its unkeyed
    # hash was erased): its replays are not compared.
    if order.request_hash and not hmac.compare_digest(order.request_hash, request_hash):
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request body."
        )


def _replay(order: Order, request_hash: str) -> StoredResponse:
    """The answer stored for the order's key; with none yet, 409 in flight."""
    _same_request(order, request_hash)
    if order.response_status is None or order.response_body is None:
        raise IdempotencyKeyInFlight(
            "A checkout with this Idempotency-Key is still in progress; retry shortly."
        )
    return StoredResponse(order.response_status, order.response_body)


T = TypeVar("T")

TRANSIENT: tuple[type[Exception], ...] = (ServiceUnavailable, UpstreamTimeout)
"""What a port raises while its peer is briefly out (refused or dropped connection, 502/503,
an open circuit, a timeout): worth another try of an idempotent call."""
RETRY_FIRST_DELAY = 0.1
RETRY_MAX_DELAY = 1.0


async def _retrying(
    call: Callable[[], Awaitable[T]],
    deadline: datetime,
    *,
    between: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """``call()``, retried with exponential backoff and full jitter on a transient failure
    for as long as another try fits before ``deadline``; then the failure is raised."""
    delay = RETRY_FIRST_DELAY
    while True:
        try:
            return await call()
        except TRANSIENT:
            pause = random.uniform(delay / 2, delay)  # noqa: S311 (jitter, not a secret)
            if utcnow() + timedelta(seconds=pause) >= deadline:
                raise
        await anyio.sleep(pause)
        delay = min(delay * 2, RETRY_MAX_DELAY)
        if between is not None:
            await between()


async def _status_changed(
    session: AsyncSession, order: Order, status: OrderStatus, reason: str | None = None
) -> None:
    """Record the order's new status in the transaction that sets it."""
    await record(
        session,
        outbox,
        (
            str(order.id),
            OrderStatusChanged(
                order_id=order.id, user_id=order.user_id, status=status.value, reason=reason
            ),
        ),
    )


class LeaseLost(Exception):
    """Someone else (recovery, in this replica or another) runs this order's saga now."""


@dataclass(frozen=True)
class _Runner:
    """One run of an order's saga, holding the order's lease while it acts.

    Steps are recorded only together with a renewal of the lease (:meth:`hold`), and the
    order is finished only by the lease's holder: two runners (a request and recovery,
    perhaps in two replicas) never finish one order two ways. ``deadline`` is when the
    checkout stops waiting for a peer that cannot be reached and settles instead.
    """

    db: Database
    order_id: uuid.UUID
    term: timedelta
    deadline: datetime
    status: OrderStatus = OrderStatus.PENDING
    """The order's status while this run may act on it (confirmed, for a cancellation)."""
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)

    async def hold(self, step: SagaStep | None = None) -> None:
        """Take or renew the lease (recording ``step``); :class:`LeaseLost` if someone holds it."""
        now = utcnow()
        async with self.db.writer() as session, session.begin():
            held = await repository.take_lease(
                session,
                self.order_id,
                owner=self.owner,
                status=self.status,
                until=now + self.term,
                now=now,
                step=step,
            )
        if not held:
            raise LeaseLost(self.order_id)

    async def persist(self, call: Callable[[], Awaitable[T]]) -> T:
        """A step's call, retried while its peer is briefly out, until the deadline.

        The lease is renewed between attempts, so nobody takes the order over meanwhile.
        Only idempotent steps come here (by reservation id, payment key, refund key).
        """
        return await _retrying(call, self.deadline, between=self.hold)

    async def release(self, *, expired_at: datetime | None = None) -> None:
        """Give the lease up (``expired_at``: the past expiry to leave on the order)."""
        async with self.db.writer() as session, session.begin():
            await repository.drop_lease(
                session, self.order_id, owner=self.owner, expired_at=expired_at
            )

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
            await _status_changed(session, order, status, order.failure_reason)
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

    Takes the database rather than a session: the saga commits after every step. A retry
    of a checkout whose runner died (its lease ran out) goes on with it from its recorded
    step: the same key and body carry the same card.
    """
    request_hash = _request_hash(data, settings)
    term = timedelta(seconds=settings.recovery_grace_seconds)
    window = timedelta(seconds=settings.checkout_deadline_seconds)
    async with db.reader() as session:
        existing = await repository.get_by_key(session, user_id, idempotency_key)
    if existing is not None:
        return await _resume(db, ports, settings, existing, request_hash, data.card_number)

    deadline = utcnow() + window
    try:
        order = await _retrying(
            lambda: _new_order(ports, settings, user_id, idempotency_key, request_hash, data),
            deadline,
        )
    except CartEmpty:
        # A duplicate of this request may have checked the cart out since the lookup above:
        # it stores its order before it empties the cart, so the key shows it now.
        answered = await _answer_of_key(db, user_id, idempotency_key, request_hash)
        if answered is not None:
            return answered
        raise
    runner = _Runner(db, order.id, term, deadline)
    order.lease_owner, order.lease_expires_at = runner.owner, utcnow() + term
    async with db.writer() as session, session.begin():
        if not await repository.add(session, order):
            raced = await repository.get_by_key(session, user_id, idempotency_key)
            if raced is not None:
                return _replay(raced, request_hash)
            raise CheckoutInProgress(
                "Another checkout of yours is still in progress; retry once it has finished."
            )
        await _status_changed(session, order, OrderStatus.PENDING)
    return await _answer_within(settings, _drive(runner, ports, settings, order, data.card_number))


_RUNNING: set[asyncio.Task[StoredResponse]] = set()
"""Sagas that outlive the request that started them (strong references until they end)."""


async def _answer_within(
    settings: OrdersSettings, saga: Coroutine[Any, Any, StoredResponse]
) -> StoredResponse:
    """The saga's answer if it comes within ``answer_within_seconds``; else 409 in flight.

    The saga runs on in its own task either way: neither a client that hangs up nor a
    checkout riding out an outage past the answer time abandons it, and a retry of the key
    gets its outcome once there is one. Every answer stays within the gateway's timeout.
    """
    task = asyncio.ensure_future(saga)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    try:
        async with asyncio.timeout(settings.answer_within_seconds):
            return await asyncio.shield(task)
    except TimeoutError:
        raise IdempotencyKeyInFlight(
            "The checkout is still running (a service it needs is slow to answer); ask again"
            " with the same Idempotency-Key for its outcome."
        ) from None


async def _resume(
    db: Database,
    ports: CheckoutPorts,
    settings: OrdersSettings,
    order: Order,
    request_hash: str,
    card_number: str,
) -> StoredResponse:
    """The answer to a retried key: the stored one, or the saga carried on by this request
    if nobody runs it any more (its runner died), or 409 in flight if somebody does."""
    _same_request(order, request_hash)
    if order.response_status is not None:
        return _replay(order, request_hash)
    # The run that died does not count against the checkout: a fresh deadline for the rest.
    runner = _Runner(
        db,
        order.id,
        timedelta(seconds=settings.recovery_grace_seconds),
        utcnow() + timedelta(seconds=settings.checkout_deadline_seconds),
    )
    try:
        await runner.hold()
    except LeaseLost:
        return _replay(order, request_hash)  # someone runs it: in flight, or finished now
    logger.warning("checkout %s: its runner died; the client's retry goes on with it", order.id)
    return await _answer_within(settings, _drive(runner, ports, settings, order, card_number))


async def _drive(
    runner: _Runner, ports: CheckoutPorts, settings: OrdersSettings, order: Order, card: str
) -> StoredResponse:
    """Run the saga under ``runner``; whatever happens, answer what the order became."""
    try:
        return await _run_saga(runner, ports, order, card)
    except LeaseLost:
        pass  # recovery took it over (this run stalled past its lease): its answer stands
    except TRANSIENT as exc:
        # A peer stayed out past the checkout's deadline: settle the order now if the
        # peers it needs for that answer; else it stays pending for recovery (or a retry).
        logger.warning("checkout %s: %s past its deadline; settling it", order.id, exc)
        await _recover_quietly(ports, runner, settings)
        with contextlib.suppress(Exception):
            await runner.release()
    except Exception:
        logger.exception("checkout %s failed unexpectedly; finishing it now", order.id)
        await _recover_quietly(ports, runner, settings)
        raise
    return await _answer_of(runner.db, order.id, order.request_hash)


async def _answer_of(db: Database, order_id: uuid.UUID, request_hash: str) -> StoredResponse:
    """The order's stored answer; 409 in flight while it has none yet."""
    async with db.reader() as session:
        order = await repository.get_order(session, order_id)
    assert order is not None
    return _replay(order, request_hash)


async def _answer_of_key(
    db: Database, user_id: uuid.UUID, idempotency_key: str, request_hash: str
) -> StoredResponse | None:
    """The stored answer of a checkout already made with this key (or its refusal), if any."""
    async with db.reader() as session:
        existing = await repository.get_by_key(session, user_id, idempotency_key)
    return None if existing is None else _replay(existing, request_hash)


def _patience_of(order: Order, settings: OrdersSettings) -> datetime:
    """Until when recovery leaves a checkout that was never charged to the client's retry:
    a checkout's deadline, counted from when its last runner stopped answering for it."""
    last_alive = order.lease_expires_at or order.created_at
    return last_alive + timedelta(seconds=settings.checkout_deadline_seconds)


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
    """The checkout's steps from the order's recorded one, each retried through a short
    outage of its peer (:meth:`_Runner.persist`)."""
    step = SagaStep(order.saga_step)
    if step is SagaStep.STARTED:
        lines = [CartLine(line.product_id, line.quantity) for line in order.lines]
        try:
            await runner.persist(lambda: ports.stock.reserve(order.id, lines))
        except OutOfStock as exc:
            return await runner.finish(OrderStatus.REJECTED, error=exc)
        await runner.hold(SagaStep.RESERVED)
        step = SagaStep.RESERVED

    if step is SagaStep.RESERVED:
        charge = await _charge(runner, ports, order, card_number)
        if charge is not ChargeStatus.CAPTURED:
            await runner.persist(lambda: ports.stock.release(order.id))
            return await runner.finish(OrderStatus.REJECTED, error=_charge_error(charge))
        await runner.hold(SagaStep.CHARGED)

    # Charged: from here the checkout only goes forward.
    await runner.persist(lambda: ports.stock.commit(order.id))
    response = await runner.finish(OrderStatus.CONFIRMED)
    await _empty_cart(ports, order, runner.deadline)
    return response


CHARGE_POLL_SECONDS = 0.25


async def _charge(
    runner: _Runner, ports: CheckoutPorts, order: Order, card_number: str
) -> ChargeStatus | None:
    """The charge's outcome: asked for by charging again under the same key, never guessed.

    Payments answers a repeated key with its recorded outcome, says ``pending`` while an
    earlier attempt is with the card processor, and lets a repeat take over the claim of an
    attempt that died (the processor, asked again under the same key, charges once).
    """
    key = payment_key(order.id)
    while True:
        charge = await runner.persist(
            lambda: ports.payments.charge(
                key=key,
                order_id=order.id,
                user_id=order.user_id,
                amount=order.total,
                card_number=card_number,
            )
        )
        if charge is not ChargeStatus.PENDING:
            return charge
        await anyio.sleep(CHARGE_POLL_SECONDS)
        await runner.hold()


async def _empty_cart(ports: CheckoutPorts, order: Order, deadline: datetime) -> None:
    product_ids = [line.product_id for line in order.lines]
    try:
        await _retrying(lambda: ports.cart.remove(order.user_id, product_ids), deadline)
    except Exception:
        # The order stands; a cart left full is a nuisance, not a loss.
        logger.exception("order %s confirmed but its cart could not be emptied", order.id)


RECOVERY_STEP_SECONDS = 2.0
"""How long recovery waits for a peer on one step before it leaves the order for next time."""


async def resume_pending_orders(
    db: Database, *, ports: CheckoutPorts, settings: OrdersSettings
) -> int:
    """Finish the checkouts and cancellations nobody runs any more (a crash mid-saga); how
    many were finished now.

    An order is taken over only once its lease ran out (nobody renewed it); a checkout
    whose charge is unknown is left to the client's retry for a while (:func:`_recover`).
    """
    async with db.reader() as session:
        unattended = await repository.list_unattended(session, now=utcnow())
    term = timedelta(seconds=settings.recovery_grace_seconds)
    done = 0
    for order_id in unattended:
        runner = _Runner(db, order_id, term, utcnow() + timedelta(seconds=RECOVERY_STEP_SECONDS))
        done += await _recover(ports, runner, settings, patient=True)
    return done


async def recovery_loop(db: Database, *, ports: CheckoutPorts, settings: OrdersSettings) -> None:
    """Finish checkouts and cancellations a crash left unfinished, now and then, for as long
    as the app runs."""
    while True:
        try:
            count = await resume_pending_orders(db, ports=ports, settings=settings)
            if count:
                logger.warning("finished %d interrupted checkout(s)", count)
        except Exception:
            logger.exception("checkout recovery failed; retrying later")
        await anyio.sleep(settings.recovery_interval_seconds)


async def _recover(
    ports: CheckoutPorts, runner: _Runner, settings: OrdersSettings, *, patient: bool = False
) -> bool:
    """Settle an order that nobody runs, without the card (so a charge is never made here);
    True if it was finished now.

    Of the recorded steps only two decide: ``cancelling`` (the cancellation is completed:
    refund, restock, cancelled) and ``charged`` (the stock is committed and the order
    confirmed, payments not asked). At ``started`` or ``reserved`` payments is asked what
    became of the charge: captured -> commit and confirm; no charge, or one still with the
    processor -> void the key (or refund the charge if it landed meanwhile), release the
    stock and reject; any other outcome (declined, timed out, voided) -> release the stock
    and reject.

    ``patient`` (the recovery loop): a checkout with no charge, or one still with the
    processor, is left alone until a checkout's deadline has passed since its last runner
    stopped answering (:func:`_patience_of`), so that the client's retry, which carries the
    card, can go on with it.
    """
    order_id = runner.order_id
    async with runner.db.reader() as session:
        order = await repository.get_order(session, order_id)
    if order is None:
        return False
    if order.status == OrderStatus.CONFIRMED.value and order.saga_step == SagaStep.CANCELLING:
        cancelling = replace(runner, status=OrderStatus.CONFIRMED)
        try:
            await cancelling.hold()
        except LeaseLost:
            return False
        await _cancel(cancelling, ports, order)
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
        else await runner.persist(lambda: ports.payments.status(key))
    )
    if (
        charge in (ChargeStatus.PENDING, None)
        and patient
        and utcnow() < _patience_of(order, settings)
    ):
        # The client's retry, which has the card, may go on with it. The lease taken over
        # is put back as it was, so that the next pass's patience still counts from when
        # the last runner stopped answering (not from the order's creation).
        await runner.release(expired_at=order.lease_expires_at)
        return False
    if charge is ChargeStatus.CAPTURED:
        await runner.persist(lambda: ports.stock.commit(order_id))
        await runner.finish(OrderStatus.CONFIRMED)
        await _empty_cart(ports, order, runner.deadline)
        logger.warning("recovered checkout %s: confirmed", order_id)
        return True
    if charge in (ChargeStatus.PENDING, None):
        # Not charged (yet), as far as payments knows: void the key, so that a charge still
        # with the processor, or one still on its way, cannot land after this decision.
        await runner.persist(
            lambda: ports.payments.refund(key=key, order_id=order_id, user_id=order.user_id)
        )
        charge = await runner.persist(lambda: ports.payments.status(key))
        if charge is ChargeStatus.REFUNDED:
            charge = None  # it had landed: refunded now, so the order is rejected all the same
    await runner.persist(lambda: ports.stock.release(order_id))
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


async def _recover_quietly(ports: CheckoutPorts, runner: _Runner, settings: OrdersSettings) -> None:
    try:
        await _recover(ports, runner, settings)
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
    interrupts is completed by recovery instead of leaving a refunded order confirmed, and
    a repeated cancel of it completes it even past the cancellation window.
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
    runner = _Runner(
        db,
        order.id,
        timedelta(seconds=settings.recovery_grace_seconds),
        utcnow() + timedelta(seconds=settings.checkout_deadline_seconds),
        status=OrderStatus.CONFIRMED,
    )
    # LeaseLost: cancelled meanwhile, or another cancel runs; every step below is idempotent.
    with contextlib.suppress(LeaseLost):
        await runner.hold(SagaStep.CANCELLING)
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
    key = payment_key(order.id)
    await runner.persist(
        lambda: ports.payments.refund(key=key, order_id=order.id, user_id=order.user_id)
    )
    await runner.persist(lambda: ports.stock.restock(order.id))
    async with runner.db.writer() as session, session.begin():
        if await repository.finish_cancellation(session, order.id):
            await _status_changed(session, order, OrderStatus.CANCELLED, CANCEL_REQUESTED)
