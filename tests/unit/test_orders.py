"""Orders: the checkout saga, idempotency, recovery, cancellation and visibility.

The saga runs on orders' own tables (a private SQLite file) against in-memory fakes of
the four ports, which record every call in one shared log so the order of the steps
can be checked, and which can be told to crash at a chosen step.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from shop.kernel.db import Database, utcnow
from shop.kernel.http import UpstreamUnavailable
from shop.kernel.security import Principal, Role
from shop.kernel.types import Money
from shop.orders import repository, service
from shop.orders.exceptions import (
    CartEmpty,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    OrderNotCancellable,
    OrderNotFound,
    OutOfStock,
)
from shop.orders.models import Order, OrderStatus, SagaStep
from shop.orders.ports import CartLine, ChargeStatus, CheckoutPorts, PricedProduct
from shop.orders.schemas import OrderCreate
from shop.orders.service import StoredResponse, payment_key
from shop.orders.settings import OrdersSettings
from tests.unit.conftest import MakeDatabase

pytestmark = pytest.mark.anyio

APPROVED_CARD = "4242424242424242"
OTHER_APPROVED_CARD = "5555555555554444"
DECLINED_CARD = "4000000000000002"
TIMEOUT_CARD = "4000000000000119"

SETTINGS = OrdersSettings(recovery_grace_seconds=3600, fingerprint_key=SecretStr("k" * 32))
TERM = timedelta(seconds=SETTINGS.recovery_grace_seconds)
LATER = SETTINGS.model_copy(update={"checkout_deadline_seconds": 0.001})
"""The settings as recovery sees them once every checkout's deadline has passed."""

SAGA_STEPS = {"stock.reserve", "payments.charge", "stock.commit", "stock.release", "cart.remove"}


class Crash(RuntimeError):
    """What a fake raises where the test asked it to fail."""


class ProcessDied(BaseException):
    """The process running the saga died: no code of it runs any more (not an Exception)."""


# --------------------------------------------------------------------------- fakes


@dataclass
class CallLog:
    """Every port call, in order; and where the fakes should crash."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_before: set[str] = field(default_factory=set)
    fail_after: set[str] = field(default_factory=set)
    fail_once: set[str] = field(default_factory=set)
    die_after: set[str] = field(default_factory=set)
    out: dict[str, int] = field(default_factory=dict)
    """Peers briefly out: a call of the name fails as unreachable this many more times."""

    def enter(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if self.out.get(name, 0) > 0:
            self.out[name] -= 1
            raise UpstreamUnavailable(f"{name}: the service cannot be reached")
        if name in self.fail_once:
            self.fail_once.discard(name)
            raise Crash(f"{name} crashed (once)")
        if name in self.fail_before:
            raise Crash(f"{name} crashed")

    def leave(self, name: str) -> None:
        if name in self.die_after:
            raise ProcessDied(f"the process died after {name}")
        if name in self.fail_after:
            raise Crash(f"{name} crashed after doing its work")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def count(self, name: str) -> int:
        return self.names().count(name)

    def saga(self) -> list[str]:
        return [name for name in self.names() if name in SAGA_STEPS]


class FakeCart:
    def __init__(self, log: CallLog) -> None:
        self.log = log
        self.contents: dict[uuid.UUID, dict[int, int]] = {}

    def put(self, user_id: uuid.UUID, product_id: int, quantity: int) -> None:
        self.contents.setdefault(user_id, {})[product_id] = quantity

    def of(self, user_id: uuid.UUID) -> dict[int, int]:
        return dict(self.contents.get(user_id, {}))

    async def lines(self, user_id: uuid.UUID) -> list[CartLine]:
        self.log.enter("cart.lines", user_id)
        return [CartLine(product_id=p, quantity=q) for p, q in self.of(user_id).items()]

    async def remove(self, user_id: uuid.UUID, product_ids: Collection[int]) -> None:
        self.log.enter("cart.remove", sorted(product_ids))
        for product_id in product_ids:
            self.contents.get(user_id, {}).pop(product_id, None)
        self.log.leave("cart.remove")


class FakePriceList:
    def __init__(self, log: CallLog) -> None:
        self.log = log
        self.products: dict[int, PricedProduct] = {}

    def add(self, product_id: int, name: str, amount: int) -> None:
        price = Money(amount=amount, currency="EUR")
        self.products[product_id] = PricedProduct(product_id=product_id, name=name, price=price)

    async def prices(self, product_ids: Collection[int]) -> dict[int, PricedProduct]:
        self.log.enter("prices.prices", sorted(product_ids))
        return {p: self.products[p] for p in product_ids if p in self.products}


@dataclass
class Reservation:
    lines: list[CartLine]
    status: str = "reserved"


class FakeStock:
    """Counts on hand and reserved per product; reservations keyed by the order id."""

    def __init__(self, log: CallLog) -> None:
        self.log = log
        self.on_hand: dict[int, int] = {}
        self.reserved: dict[int, int] = {}
        self.reservations: dict[uuid.UUID, Reservation] = {}

    def set(self, product_id: int, on_hand: int) -> None:
        self.on_hand[product_id] = on_hand
        self.reserved.setdefault(product_id, 0)

    def available(self, product_id: int) -> int:
        return self.on_hand.get(product_id, 0) - self.reserved.get(product_id, 0)

    async def reserve(self, reservation_id: uuid.UUID, lines: Sequence[CartLine]) -> None:
        self.log.enter("stock.reserve", reservation_id)
        if reservation_id in self.reservations:
            return
        short = [
            line.product_id for line in lines if self.available(line.product_id) < line.quantity
        ]
        if short:
            raise OutOfStock(f"Not enough stock for {short}.", product_ids=short)
        for line in lines:
            self.reserved[line.product_id] += line.quantity
        self.reservations[reservation_id] = Reservation(list(lines))
        self.log.leave("stock.reserve")

    def _move(self, reservation_id: uuid.UUID, old: str, new: str, on_hand: int, held: int) -> None:
        reservation = self.reservations.get(reservation_id)
        if reservation is None or reservation.status != old:
            return
        for line in reservation.lines:
            self.on_hand[line.product_id] += on_hand * line.quantity
            self.reserved[line.product_id] += held * line.quantity
        reservation.status = new

    async def commit(self, reservation_id: uuid.UUID) -> None:
        self.log.enter("stock.commit", reservation_id)
        self._move(reservation_id, "reserved", "committed", -1, -1)
        self.log.leave("stock.commit")

    async def release(self, reservation_id: uuid.UUID) -> None:
        self.log.enter("stock.release", reservation_id)
        self._move(reservation_id, "reserved", "released", 0, -1)
        self.log.leave("stock.release")

    async def restock(self, reservation_id: uuid.UUID) -> None:
        self.log.enter("stock.restock", reservation_id)
        self._move(reservation_id, "committed", "returned", 1, 0)
        self.log.leave("stock.restock")


@dataclass
class Charge:
    key: str
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Money
    card_number: str
    status: ChargeStatus


class FakePayments:
    """Outcome by card suffix (0002 declined, 0119 timed out); one charge per key."""

    def __init__(self, log: CallLog) -> None:
        self.log = log
        self.charges: dict[str, Charge] = {}
        self.gate: anyio.Event | None = None
        self.entered = anyio.Event()

    async def charge(
        self,
        *,
        key: str,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        amount: Money,
        card_number: str,
    ) -> ChargeStatus:
        self.log.enter("payments.charge", key)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if key not in self.charges:
            if card_number.endswith("0002"):
                status = ChargeStatus.DECLINED
            elif card_number.endswith("0119"):
                status = ChargeStatus.TIMED_OUT
            else:
                status = ChargeStatus.CAPTURED
            self.charges[key] = Charge(key, order_id, user_id, amount, card_number, status)
        self.log.leave("payments.charge")
        return self.charges[key].status

    async def status(self, key: str) -> ChargeStatus | None:
        self.log.enter("payments.status", key)
        charge = self.charges.get(key)
        return None if charge is None else charge.status

    async def refund(self, *, key: str, order_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.log.enter("payments.refund", order_id)
        charge = self.charges.get(key)
        if charge is None:
            # Like the real service: no charge yet voids the key.
            zero = Money(amount=0, currency="EUR")
            self.charges[key] = Charge(key, order_id, user_id, zero, "", ChargeStatus.VOIDED)
        elif charge.status is ChargeStatus.CAPTURED:
            charge.status = ChargeStatus.REFUNDED
        self.log.leave("payments.refund")

    def captured(self) -> list[Charge]:
        return [c for c in self.charges.values() if c.status is ChargeStatus.CAPTURED]


@dataclass
class World:
    db: Database
    log: CallLog
    cart: FakeCart
    prices: FakePriceList
    stock: FakeStock
    payments: FakePayments

    @property
    def ports(self) -> CheckoutPorts:
        return CheckoutPorts(
            cart=self.cart, prices=self.prices, stock=self.stock, payments=self.payments
        )

    async def checkout(
        self,
        user_id: uuid.UUID,
        *,
        key: str = "key-1",
        card: str = APPROVED_CARD,
        city: str = "London",
    ) -> StoredResponse:
        return await service.create_order(
            self.db,
            ports=self.ports,
            settings=SETTINGS,
            user_id=user_id,
            idempotency_key=key,
            data=order_create(card, city=city),
        )

    async def order_by_key(self, user_id: uuid.UUID, key: str = "key-1") -> Order:
        async with self.db.reader() as session:
            order = await repository.get_by_key(session, user_id, key)
        assert order is not None
        return order

    async def resume(self) -> int:
        """Recovery, as it runs once every lease and deadline has run out (time passing)."""
        await expire_leases(self.db)
        return await service.resume_pending_orders(self.db, ports=self.ports, settings=LATER)


async def expire_leases(db: Database) -> None:
    async with db.writer() as session, session.begin():
        await session.execute(
            sa.update(Order).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def order_create(card: str = APPROVED_CARD, *, city: str = "London") -> OrderCreate:
    return OrderCreate.model_validate(
        {
            "card_number": card,
            "shipping_address": {
                "name": "Ada Lovelace",
                "line1": "12 Analytical Street",
                "city": city,
                "postal_code": "NW1 6XE",
                "country": "GB",
            },
        }
    )


def customer() -> Principal:
    return Principal(user_id=uuid.uuid4(), role=Role.CUSTOMER)


def admin() -> Principal:
    return Principal(user_id=uuid.uuid4(), role=Role.ADMIN)


@pytest.fixture
async def world(make_database: MakeDatabase) -> World:
    db = await make_database(["orders"])
    log = CallLog()
    shop = World(db, log, FakeCart(log), FakePriceList(log), FakeStock(log), FakePayments(log))
    shop.prices.add(1, "Teapot", 1_500)
    shop.prices.add(2, "Cup", 250)
    shop.stock.set(1, 10)
    shop.stock.set(2, 10)
    return shop


def fill_cart(world: World, user_id: uuid.UUID) -> None:
    world.cart.put(user_id, 1, 2)
    world.cart.put(user_id, 2, 4)


# --------------------------------------------------------------------------- happy path


async def test_checkout_reserves_then_charges_then_commits_and_empties_the_cart(
    world: World,
) -> None:
    user = customer()
    fill_cart(world, user.user_id)

    result = await world.checkout(user.user_id)

    assert result.status_code == 201
    body = result.body
    assert body["status"] == "confirmed"
    assert body["total"] == {"amount": 2 * 1_500 + 4 * 250, "currency": "EUR"}
    assert [(i["product_id"], i["quantity"], i["line_total"]["amount"]) for i in body["items"]] == [
        (1, 2, 3_000),
        (2, 4, 1_000),
    ]
    assert body["card_last4"] == "4242"
    assert body["failure_reason"] is None
    assert world.log.saga() == ["stock.reserve", "payments.charge", "stock.commit", "cart.remove"]

    order_id = uuid.UUID(body["id"])
    (charge,) = world.payments.charges.values()
    assert charge.key == payment_key(order_id)
    assert charge.order_id == order_id
    assert charge.user_id == user.user_id
    assert charge.amount == Money(amount=4_000, currency="EUR")
    assert charge.card_number == APPROVED_CARD
    assert world.stock.reservations[order_id].status == "committed"
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (8, 0)
    assert (world.stock.on_hand[2], world.stock.reserved[2]) == (6, 0)
    assert world.cart.of(user.user_id) == {}

    stored = await world.order_by_key(user.user_id)
    assert stored.id == order_id
    assert stored.status == OrderStatus.CONFIRMED.value
    assert stored.saga_step == SagaStep.FINISHED.value
    assert (stored.response_status, stored.response_body) == (201, body)


async def test_checkout_snapshots_prices_and_leaves_out_products_no_longer_sold(
    world: World,
) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.cart.put(user.user_id, 99, 1)  # deleted from the catalog since

    result = await world.checkout(user.user_id)
    world.prices.add(1, "Teapot", 9_999)  # a later price change does not touch the order

    assert result.status_code == 201
    assert [item["product_id"] for item in result.body["items"]] == [1, 2]
    reserved = world.stock.reservations[uuid.UUID(result.body["id"])].lines
    assert {line.product_id for line in reserved} == {1, 2}
    assert ("cart.remove", [1, 2]) in world.log.calls
    async with world.db.reader() as session:
        order = await service.get_order(
            session, principal=user, order_id=uuid.UUID(result.body["id"])
        )
    assert order.lines[0].unit_amount == 1_500


@pytest.mark.parametrize("contents", [{}, {99: 1}], ids=["empty", "only-deleted-products"])
async def test_checkout_of_an_empty_cart_is_refused_and_stores_nothing(
    world: World, contents: dict[int, int]
) -> None:
    user = customer()
    for product_id, quantity in contents.items():
        world.cart.put(user.user_id, product_id, quantity)

    with pytest.raises(CartEmpty):
        await world.checkout(user.user_id)

    assert world.log.saga() == []
    async with world.db.reader() as session:
        assert await repository.get_by_key(session, user.user_id, "key-1") is None


# --------------------------------------------------------------------------- failures


async def test_out_of_stock_rejects_the_order_without_charging(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.stock.set(2, 3)  # 4 cups asked

    result = await world.checkout(user.user_id)

    assert result.status_code == 409
    assert result.body["type"] == "/problems/out-of-stock"
    assert result.body["status"] == 409
    assert result.body["product_ids"] == [2]
    assert world.log.saga() == ["stock.reserve"]
    assert not any(name.startswith("payments.") for name in world.log.names())
    assert world.payments.charges == {}
    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.REJECTED.value
    assert order.failure_reason == "out-of-stock"
    assert (order.response_status, order.response_body) == (409, result.body)
    assert world.cart.of(user.user_id) == {1: 2, 2: 4}
    assert (world.stock.reserved[1], world.stock.reserved[2]) == (0, 0)


@pytest.mark.parametrize(
    ("card", "status", "slug"),
    [(DECLINED_CARD, 402, "payment-declined"), (TIMEOUT_CARD, 504, "payment-timeout")],
    ids=["declined", "timed-out"],
)
async def test_failed_payment_releases_the_stock_and_rejects_the_order(
    world: World, card: str, status: int, slug: str
) -> None:
    user = customer()
    fill_cart(world, user.user_id)

    result = await world.checkout(user.user_id, card=card)

    assert result.status_code == status
    assert result.body["type"] == f"/problems/{slug}"
    assert result.body["status"] == status
    assert world.log.saga() == ["stock.reserve", "payments.charge", "stock.release"]
    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.REJECTED.value
    assert order.failure_reason == slug
    assert order.card_last4 == card[-4:]
    assert world.stock.reservations[order.id].status == "released"
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (10, 0)
    assert world.payments.captured() == []
    assert world.cart.of(user.user_id) == {1: 2, 2: 4}


# --------------------------------------------------------------------------- crashes and recovery


async def test_crash_after_the_charge_is_confirmed_by_recovery(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.fail_before.add("stock.commit")  # down for the checkout and its own retry

    with pytest.raises(Crash):
        await world.checkout(user.user_id)

    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.PENDING.value
    assert order.saga_step == SagaStep.CHARGED.value
    assert order.response_status is None
    assert world.stock.reservations[order.id].status == "reserved"

    world.log.fail_before.clear()
    assert await world.resume() == 1

    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.CONFIRMED.value
    assert order.response_status == 201
    assert world.stock.reservations[order.id].status == "committed"
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (8, 0)
    assert world.log.count("payments.charge") == 1
    assert len(world.payments.captured()) == 1
    assert "stock.release" not in world.log.names()
    # The retried request now gets the recovered answer; nothing is pending any more.
    replay = await world.checkout(user.user_id)
    assert replay.status_code == 201
    assert replay.body["status"] == "confirmed"
    assert await world.resume() == 0


async def test_recovery_that_confirms_an_order_also_empties_the_cart(world: World) -> None:
    """A confirmed order empties the cart (docs/api.md), however it got confirmed."""
    user = customer()
    fill_cart(world, user.user_id)
    world.log.fail_before.add("stock.commit")
    with pytest.raises(Crash):
        await world.checkout(user.user_id)
    world.log.fail_before.clear()

    assert await world.resume() == 1

    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.CONFIRMED.value
    assert world.cart.of(user.user_id) == {}


async def test_crash_before_payments_recorded_anything_is_rejected_and_released(
    world: World,
) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.fail_before.update({"payments.charge", "payments.status"})  # payments is down

    with pytest.raises(Crash):
        await world.checkout(user.user_id)

    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.PENDING.value
    assert order.saga_step == SagaStep.RESERVED.value
    assert world.stock.reserved[1] == 2

    world.log.fail_before.clear()
    assert await world.resume() == 1

    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.REJECTED.value
    assert order.failure_reason == "checkout-interrupted"
    assert order.response_status == 409
    assert world.stock.reservations[order.id].status == "released"
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (10, 0)
    assert [c.status for c in world.payments.charges.values()] == [ChargeStatus.VOIDED]
    assert "stock.commit" not in world.log.names()
    assert world.cart.of(user.user_id) == {1: 2, 2: 4}


async def test_a_transient_crash_is_finished_by_the_checkout_itself(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.fail_once.add("stock.commit")

    with pytest.raises(Crash):
        await world.checkout(user.user_id)

    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.CONFIRMED.value
    assert world.stock.reservations[order.id].status == "committed"
    assert world.log.count("payments.charge") == 1
    assert await world.resume() == 0
    replay = await world.checkout(user.user_id)
    assert (replay.status_code, replay.body["status"]) == (201, "confirmed")


async def test_a_crash_while_reserving_is_rejected_at_once(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.fail_once.add("stock.reserve")

    with pytest.raises(Crash):
        await world.checkout(user.user_id)

    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.REJECTED.value
    assert order.failure_reason == "checkout-interrupted"
    assert [c.status for c in world.payments.charges.values()] == [ChargeStatus.VOIDED]
    replay = await world.checkout(user.user_id)
    assert replay.status_code == 409
    assert replay.body["type"] == "/problems/checkout-interrupted"


async def test_recovery_leaves_recent_pending_orders_alone(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.fail_before.add("stock.commit")
    with pytest.raises(Crash):
        await world.checkout(user.user_id)
    world.log.fail_before.clear()
    calls = len(world.log.calls)

    resumed = await service.resume_pending_orders(world.db, ports=world.ports, settings=SETTINGS)

    assert resumed == 0
    assert len(world.log.calls) == calls
    assert (await world.order_by_key(user.user_id)).status == OrderStatus.PENDING.value


async def test_a_cart_that_cannot_be_emptied_does_not_fail_the_checkout(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.fail_before.add("cart.remove")

    result = await world.checkout(user.user_id)

    assert result.status_code == 201
    assert result.body["status"] == "confirmed"
    assert world.log.count("stock.release") == 0


# --------------------------------------------------------------------------- idempotency


@pytest.mark.parametrize("card", [APPROVED_CARD, DECLINED_CARD, TIMEOUT_CARD])
async def test_a_replayed_key_returns_the_first_answer_and_calls_no_port(
    world: World, card: str
) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    first = await world.checkout(user.user_id, card=card)
    calls = list(world.log.calls)
    world.cart.put(user.user_id, 1, 7)  # whatever the cart holds now

    again = await world.checkout(user.user_id, card=card)

    assert again == first
    assert world.log.calls == calls


async def test_an_out_of_stock_answer_is_replayed_too(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.stock.set(1, 0)
    first = await world.checkout(user.user_id)
    world.stock.set(1, 100)
    calls = len(world.log.calls)

    again = await world.checkout(user.user_id)

    assert again == first
    assert again.status_code == 409
    assert len(world.log.calls) == calls


async def test_a_key_reused_with_another_body_is_refused(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    await world.checkout(user.user_id)
    calls = len(world.log.calls)

    with pytest.raises(IdempotencyKeyReused):
        await world.checkout(user.user_id, card=OTHER_APPROVED_CARD)
    with pytest.raises(IdempotencyKeyReused):
        await world.checkout(user.user_id, city="Paris")

    assert len(world.log.calls) == calls


async def test_a_key_still_in_flight_is_refused_without_a_second_charge(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.payments.gate = anyio.Event()
    first: list[StoredResponse] = []

    async def run_first() -> None:
        first.append(await world.checkout(user.user_id))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_first)
            await world.payments.entered.wait()
            pending = await world.order_by_key(user.user_id)
            assert pending.status == OrderStatus.PENDING.value

            with pytest.raises(IdempotencyKeyInFlight):
                await world.checkout(user.user_id)
            with pytest.raises(IdempotencyKeyReused):
                await world.checkout(user.user_id, card=OTHER_APPROVED_CARD)
            world.payments.gate.set()

    assert first[0].status_code == 201
    assert world.log.count("payments.charge") == 1
    assert world.log.count("stock.reserve") == 1
    assert await world.checkout(user.user_id) == first[0]


async def test_concurrent_requests_with_one_key_make_one_order_and_one_charge(
    world: World,
) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    outcomes: list[StoredResponse | Exception] = []

    async def attempt() -> None:
        try:
            outcomes.append(await world.checkout(user.user_id))
        except IdempotencyKeyInFlight as exc:
            outcomes.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for _ in range(4):
                tasks.start_soon(attempt)

    answers = [o for o in outcomes if isinstance(o, StoredResponse)]
    assert answers
    assert all(a == answers[0] for a in answers)
    assert answers[0].status_code == 201
    assert world.log.count("payments.charge") == 1
    assert world.log.count("stock.reserve") == 1
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (8, 0)


class LateCart:
    """The cart as a duplicate request sees it when it reads the cart only after the first
    request has finished the whole checkout (the lines it bought are gone by then)."""

    def __init__(self, cart: FakeCart) -> None:
        self.cart = cart
        self.entered = anyio.Event()
        self.gate = anyio.Event()

    async def lines(self, user_id: uuid.UUID) -> list[CartLine]:
        self.entered.set()
        await self.gate.wait()
        return await self.cart.lines(user_id)

    async def remove(self, user_id: uuid.UUID, product_ids: Collection[int]) -> None:
        await self.cart.remove(user_id, product_ids)


async def test_a_duplicate_that_finds_the_cart_checked_out_replays_the_first_answer(
    world: World,
) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    late = LateCart(world.cart)
    late_ports = CheckoutPorts(
        cart=late, prices=world.prices, stock=world.stock, payments=world.payments
    )
    duplicate: list[StoredResponse] = []

    async def run_duplicate() -> None:
        duplicate.append(
            await service.create_order(
                world.db,
                ports=late_ports,
                settings=SETTINGS,
                user_id=user.user_id,
                idempotency_key="key-1",
                data=order_create(),
            )
        )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_duplicate)
            await late.entered.wait()  # past its key lookup: no order yet
            first = await world.checkout(user.user_id)
            assert world.cart.of(user.user_id) == {}
            late.gate.set()

    assert first.status_code == 201
    assert duplicate == [first]
    assert world.log.count("payments.charge") == 1


async def test_keys_belong_to_one_user(world: World) -> None:
    alice, bob = customer(), customer()
    fill_cart(world, alice.user_id)
    fill_cart(world, bob.user_id)

    first = await world.checkout(alice.user_id, key="shared")
    second = await world.checkout(bob.user_id, key="shared")

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.body["id"] != second.body["id"]
    assert world.log.count("payments.charge") == 2


# --------------------------------------------------------------------------- cancellation


async def confirmed_order(world: World, user: Principal) -> uuid.UUID:
    fill_cart(world, user.user_id)
    result = await world.checkout(user.user_id)
    assert result.status_code == 201
    return uuid.UUID(result.body["id"])


async def test_cancel_refunds_restocks_and_cancels(world: World) -> None:
    user = customer()
    order_id = await confirmed_order(world, user)

    order = await service.cancel_order(
        world.db, ports=world.ports, settings=SETTINGS, principal=user, order_id=order_id
    )

    assert order.status == OrderStatus.CANCELLED.value
    assert order.id == order_id
    assert ("payments.refund", order_id) in world.log.calls
    assert ("stock.restock", order_id) in world.log.calls
    assert world.payments.charges[payment_key(order_id)].status is ChargeStatus.REFUNDED
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (10, 0)
    assert world.stock.reservations[order_id].status == "returned"
    async with world.db.reader() as session:
        stored = await service.get_order(session, principal=user, order_id=order_id)
    assert stored.status == OrderStatus.CANCELLED.value


async def test_cancelling_twice_returns_the_cancelled_order_and_undoes_nothing_twice(
    world: World,
) -> None:
    user = customer()
    order_id = await confirmed_order(world, user)

    first = await service.cancel_order(
        world.db, ports=world.ports, settings=SETTINGS, principal=user, order_id=order_id
    )
    second = await service.cancel_order(
        world.db, ports=world.ports, settings=SETTINGS, principal=user, order_id=order_id
    )

    assert first.status == second.status == OrderStatus.CANCELLED.value
    assert 1 <= world.log.count("payments.refund") <= 2
    assert 1 <= world.log.count("stock.restock") <= 2
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (10, 0)
    assert (world.stock.on_hand[2], world.stock.reserved[2]) == (10, 0)


@pytest.mark.parametrize("card", [DECLINED_CARD, TIMEOUT_CARD])
async def test_a_rejected_order_cannot_be_cancelled(world: World, card: str) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    await world.checkout(user.user_id, card=card)
    order = await world.order_by_key(user.user_id)

    with pytest.raises(OrderNotCancellable):
        await service.cancel_order(
            world.db, ports=world.ports, settings=SETTINGS, principal=user, order_id=order.id
        )

    assert "payments.refund" not in world.log.names()
    assert "stock.restock" not in world.log.names()


async def test_a_pending_order_cannot_be_cancelled(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.fail_before.add("stock.commit")
    with pytest.raises(Crash):
        await world.checkout(user.user_id)
    order = await world.order_by_key(user.user_id)

    with pytest.raises(OrderNotCancellable):
        await service.cancel_order(
            world.db, ports=world.ports, settings=SETTINGS, principal=user, order_id=order.id
        )
    assert "payments.refund" not in world.log.names()


async def test_another_customer_cannot_cancel_an_order_but_an_admin_can(world: World) -> None:
    owner = customer()
    order_id = await confirmed_order(world, owner)

    with pytest.raises(OrderNotFound):
        await service.cancel_order(
            world.db, ports=world.ports, settings=SETTINGS, principal=customer(), order_id=order_id
        )
    assert "payments.refund" not in world.log.names()

    order = await service.cancel_order(
        world.db, ports=world.ports, settings=SETTINGS, principal=admin(), order_id=order_id
    )
    assert order.status == OrderStatus.CANCELLED.value


# --------------------------------------------------------------------------- visibility


async def test_a_customer_sees_only_their_own_orders_and_an_admin_sees_any(world: World) -> None:
    owner = customer()
    order_id = await confirmed_order(world, owner)

    async with world.db.reader() as session:
        mine = await service.get_order(session, principal=owner, order_id=order_id)
        with pytest.raises(OrderNotFound):
            await service.get_order(session, principal=customer(), order_id=order_id)
        with pytest.raises(OrderNotFound):
            await service.get_order(session, principal=owner, order_id=uuid.uuid4())
        seen_by_admin = await service.get_order(session, principal=admin(), order_id=order_id)

    assert mine.id == seen_by_admin.id == order_id


async def test_list_orders_is_the_callers_own_newest_first(world: World) -> None:
    alice, bob = customer(), customer()
    world.stock.set(1, 100)
    world.stock.set(2, 100)
    ids = []
    for key in ("a", "b", "c"):
        fill_cart(world, alice.user_id)
        ids.append((await world.checkout(alice.user_id, key=key)).body["id"])
    fill_cart(world, bob.user_id)
    await world.checkout(bob.user_id, key="a")

    async with world.db.reader() as session:
        rows = await service.list_orders(session, principal=alice, limit=10, offset=0)
        page = await service.list_orders(session, principal=alice, limit=2, offset=1)

    assert [str(row.id) for row in rows] == ids[::-1]
    assert [str(row.id) for row in page] == ids[::-1][1:]


# --------------------------------------------------------------------------- the body

HYPOTHESIS = settings(database=None, deadline=None, max_examples=200)


def card_is_accepted(number: str) -> bool:
    try:
        order_create(number)
    except ValidationError:
        return False
    return True


@HYPOTHESIS
@given(st.text(alphabet="0123456789", min_size=12, max_size=19))
def test_any_12_to_19_digits_are_a_card_number(number: str) -> None:
    """docs/api.md: card_number is 12-19 digits (the processor decides the rest)."""
    assert order_create(number).card_number == number


@HYPOTHESIS
@given(
    st.one_of(
        st.text(alphabet="0123456789", max_size=11),
        st.text(alphabet="0123456789", min_size=20, max_size=40),
        st.text(min_size=12, max_size=19).filter(
            lambda text: not all(char in "0123456789" for char in text)
        ),
    )
)
def test_anything_else_is_not_a_card_number(text: str) -> None:
    assert not card_is_accepted(text)


@pytest.mark.parametrize(
    "card",
    [
        "42424242424",  # 11 digits
        "42424242424242424242",  # 20 digits
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "4242424242424242\n",
        " 4242424242424242",
        "424242424242424a",
        "\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662",
    ],
)
def test_order_create_refuses_malformed_card_numbers(card: str) -> None:
    assert not card_is_accepted(card)


@pytest.mark.parametrize(
    "address",
    [
        {"country": "XX"},
        {"country": "gb"},
        {"postal_code": "!"},
        {"name": "Ada\x00"},
        {"role": "admin"},
    ],
)
def test_order_create_refuses_bad_addresses_and_unknown_fields(address: dict[str, str]) -> None:
    base = order_create().shipping_address.model_dump()
    with pytest.raises(ValidationError):
        OrderCreate.model_validate(
            {"card_number": APPROVED_CARD, "shipping_address": {**base, **address}}
        )


# --------------------------------------------------------------------------- stored fingerprints


async def test_the_stored_fingerprint_does_not_give_the_card_number_away(world: World) -> None:
    """With the last four digits and the issuer prefix known, an unkeyed hash of the body
    gave the card away in about 10^5 tries; the keyed one matches no candidate."""
    user = customer()
    fill_cart(world, user.user_id)
    card = "4242424242424242"
    await world.checkout(user.user_id, card=card)
    order = await world.order_by_key(user.user_id)

    body = order_create(card).model_dump_json().encode()
    assert order.request_hash != hashlib.sha256(body).hexdigest()
    rekeyed = SETTINGS.model_copy(update={"fingerprint_key": SecretStr("x" * 32)})
    assert order.request_hash != service._request_hash(order_create(card), rekeyed)
    assert card not in repr(order.__dict__)
    # The fingerprint still tells another body apart: the same key with another card.
    with pytest.raises(IdempotencyKeyReused):
        await world.checkout(user.user_id, card=OTHER_APPROVED_CARD)


async def test_an_order_from_before_keyed_fingerprints_replays_its_answer(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    first = await world.checkout(user.user_id)
    async with world.db.writer() as session, session.begin():
        await session.execute(sa.update(Order).values(request_hash=""))

    assert await world.checkout(user.user_id) == first


# --------------------------------------------------------------------------- cancellation window


async def test_an_order_can_be_cancelled_within_its_window_only(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    result = await world.checkout(user.user_id)
    order_id = uuid.UUID(result.body["id"])
    order = await world.order_by_key(user.user_id)
    assert order.confirmed_at is not None
    async with world.db.writer() as session, session.begin():
        await session.execute(
            sa.update(Order).values(confirmed_at=utcnow() - timedelta(hours=1, seconds=1))
        )

    with pytest.raises(OrderNotCancellable, match="within 1 h of its confirmation"):
        await service.cancel_order(
            world.db, ports=world.ports, settings=SETTINGS, principal=user, order_id=order_id
        )
    assert "payments.refund" not in world.log.names()

    wider = SETTINGS.model_copy(update={"cancellation_window_seconds": 7200})
    cancelled = await service.cancel_order(
        world.db, ports=world.ports, settings=wider, principal=user, order_id=order_id
    )
    assert cancelled.status == OrderStatus.CANCELLED.value


# --------------------------------------------------------------------------- short outages


QUICK = SETTINGS.model_copy(update={"checkout_deadline_seconds": 1.0, "answer_within_seconds": 5.0})


async def checkout_with(
    world: World, user_id: uuid.UUID, settings: OrdersSettings, key: str = "key-1"
) -> StoredResponse:
    return await service.create_order(
        world.db,
        ports=world.ports,
        settings=settings,
        user_id=user_id,
        idempotency_key=key,
        data=order_create(),
    )


@pytest.mark.parametrize(
    "step", ["cart.lines", "stock.reserve", "payments.charge", "stock.commit", "cart.remove"]
)
async def test_a_step_whose_service_is_briefly_out_is_retried(world: World, step: str) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.out[step] = 3

    result = await checkout_with(world, user.user_id, QUICK)

    assert result.status_code == 201, result.body
    assert world.log.count(step) == 4
    assert world.log.count("payments.charge") == (4 if step == "payments.charge" else 1)
    assert len(world.payments.captured()) == 1
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (8, 0)
    assert world.cart.of(user.user_id) == {}


async def test_a_service_out_past_the_deadline_rejects_with_a_final_answer(
    world: World,
) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.log.out["stock.reserve"] = 10_000

    result = await checkout_with(world, user.user_id, QUICK)

    assert result.status_code == 409
    assert result.body["type"] == "/problems/checkout-interrupted"
    order = await world.order_by_key(user.user_id)
    assert order.status == OrderStatus.REJECTED.value
    assert world.payments.captured() == []
    assert [c.status for c in world.payments.charges.values()] == [ChargeStatus.VOIDED]
    assert await checkout_with(world, user.user_id, QUICK) == result


async def test_charged_checkouts_only_go_forward_even_past_the_deadline(world: World) -> None:
    """Inventory is out after the capture, past the deadline: the order stays pending (the
    key answers in flight) and is confirmed once inventory is back, never refunded."""
    user = customer()
    fill_cart(world, user.user_id)
    world.log.out["stock.commit"] = 10_000

    with pytest.raises(IdempotencyKeyInFlight):
        await checkout_with(world, user.user_id, QUICK)
    order = await world.order_by_key(user.user_id)
    assert (order.status, order.saga_step) == ("pending", "charged")
    assert order.lease_owner is None, "the request let go of it"

    world.log.out.clear()
    replay = await checkout_with(world, user.user_id, QUICK)

    assert replay.status_code == 201
    assert world.log.count("payments.charge") == 1
    assert len(world.payments.captured()) == 1
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (8, 0)


async def test_a_retry_while_the_checkout_runs_is_told_to_come_back(world: World) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.payments.gate = anyio.Event()
    answers: list[StoredResponse] = []

    async def first() -> None:
        answers.append(await checkout_with(world, user.user_id, QUICK))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(first)
        await world.payments.entered.wait()
        with pytest.raises(IdempotencyKeyInFlight) as raised:
            await checkout_with(world, user.user_id, QUICK)
        assert raised.value.headers["Retry-After"] == "1"
        world.payments.gate.set()

    assert answers[0].status_code == 201
    assert await checkout_with(world, user.user_id, QUICK) == answers[0]


async def test_a_checkout_without_an_outcome_in_time_answers_in_flight_and_runs_on(
    world: World,
) -> None:
    user = customer()
    fill_cart(world, user.user_id)
    world.payments.gate = anyio.Event()
    hurried = QUICK.model_copy(update={"answer_within_seconds": 0.2})

    with pytest.raises(IdempotencyKeyInFlight):
        await checkout_with(world, user.user_id, hurried)
    world.payments.gate.set()

    for _ in range(250):  # the saga runs on in its own task: look until it is done
        if (await world.order_by_key(user.user_id)).status != OrderStatus.PENDING.value:
            break
        await anyio.sleep(0.02)
    replay = await checkout_with(world, user.user_id, hurried)
    assert replay.status_code == 201
    assert world.log.count("payments.charge") == 1


@pytest.mark.parametrize("died_after", ["stock.reserve", "payments.charge"])
async def test_the_clients_retry_goes_on_with_a_checkout_whose_runner_died(
    world: World, died_after: str
) -> None:
    """Orders died mid-checkout (its lease runs out); the retry, with the same key and body
    and so the same card, goes on from the recorded step instead of abandoning it."""
    user = customer()
    fill_cart(world, user.user_id)
    world.log.die_after.add(died_after)
    patient = SETTINGS.model_copy(update={"checkout_deadline_seconds": 60})
    with pytest.raises(ProcessDied):
        await checkout_with(world, user.user_id, patient)
    world.log.die_after.clear()
    await expire_leases(world.db)
    # Recovery, meanwhile, leaves a checkout that may still be charged to the client's retry;
    # one whose charge was captured it confirms itself (whichever comes first).
    resumed = await service.resume_pending_orders(world.db, ports=world.ports, settings=patient)
    assert resumed == (1 if died_after == "payments.charge" else 0)

    result = await checkout_with(world, user.user_id, patient)

    assert result.status_code == 201, result.body
    assert len(world.payments.captured()) == 1
    assert world.log.count("payments.charge") == 1
    assert (world.stock.on_hand[1], world.stock.reserved[1]) == (8, 0)


async def test_a_dead_runner_does_not_count_against_the_checkouts_deadline(world: World) -> None:
    """Orders died and its lease outlasted the checkout's deadline: the client's retry still
    goes on with the checkout (before, it was rejected checkout-interrupted: a lost sale),
    and recovery waits a deadline's length after the lease ran out before it gives up."""
    user = customer()
    fill_cart(world, user.user_id)
    world.log.die_after.add("stock.reserve")
    with pytest.raises(ProcessDied):
        await checkout_with(world, user.user_id, SETTINGS)
    world.log.die_after.clear()
    long_ago = utcnow() - timedelta(seconds=SETTINGS.checkout_deadline_seconds + 5)
    async with world.db.writer() as session, session.begin():
        await session.execute(
            sa.update(Order).values(created_at=long_ago, lease_expires_at=utcnow())
        )
    # Every pass leaves it: a pass that looked and let go does not forget when the runner
    # died (before, the second pass counted from the order's creation and rejected it).
    for _ in range(3):
        assert (
            await service.resume_pending_orders(world.db, ports=world.ports, settings=SETTINGS) == 0
        )
    assert (await world.order_by_key(user.user_id)).status == OrderStatus.PENDING.value

    result = await checkout_with(world, user.user_id, SETTINGS)

    assert result.status_code == 201, result.body
    assert len(world.payments.captured()) == 1
