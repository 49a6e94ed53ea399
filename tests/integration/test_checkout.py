"""Checkout on a real database: orders, payments, inventory, cart and catalog wired with
the monolith's in-process adapters (``bindings.inprocess.checkout_ports``), including a
crash between the charge and the rest of the saga."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from bindings.inprocess import CatalogEntries, checkout_ports
from shop.cart import service as cart
from shop.catalog import service as catalog
from shop.catalog.schemas import CategoryCreate, ProductCreate
from shop.inventory import service as inventory
from shop.kernel.db import Database, utcnow
from shop.kernel.security import Principal, Role
from shop.kernel.types import Money, MoneyIn
from shop.orders import repository as orders_repository
from shop.orders import service as orders
from shop.orders.exceptions import CheckoutInterrupted
from shop.orders.models import Order, OrderStatus
from shop.orders.ports import ChargeStatus, CheckoutPorts, Payments
from shop.orders.schemas import OrderCreate, OrderRead
from shop.orders.service import StoredResponse
from shop.orders.settings import OrdersSettings
from shop.payments import service as payments
from shop.payments.dependencies import PaymentsRuntime
from shop.payments.models import Payment, PaymentStatus
from shop.payments.settings import PaymentsSettings
from tests.integration.conftest import Connect

pytestmark = pytest.mark.anyio

APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TIMEOUT_CARD = "4000000000000119"
SETTINGS = OrdersSettings(recovery_grace_seconds=3600, fingerprint_key=SecretStr("k" * 32))
TERM = timedelta(seconds=SETTINGS.recovery_grace_seconds)
LATER = SETTINGS.model_copy(update={"checkout_deadline_seconds": 0.001})
"""The settings as recovery sees them once every checkout's deadline has passed."""
PAYMENTS = PaymentsSettings(processor_delay_seconds=0.05)
ADMIN = Principal(user_id=uuid.uuid4(), role=Role.ADMIN)


def order_create(card: str = APPROVED_CARD) -> OrderCreate:
    return OrderCreate.model_validate(
        {
            "card_number": card,
            "shipping_address": {
                "name": "Ada Lovelace",
                "line1": "12 Analytical Street",
                "city": "London",
                "postal_code": "NW1 6XE",
                "country": "GB",
            },
        }
    )


ORDER = order_create()


@dataclass
class Shop:
    db: Database
    ports: CheckoutPorts

    async def product(self, name: str, amount: int, on_hand: int) -> int:
        slug = f"c-{uuid.uuid4().hex[:12]}"
        async with self.db.writer() as session, session.begin():
            category = await catalog.create_category(
                session, data=CategoryCreate(slug=slug, name=slug)
            )
            product = await catalog.create_product(
                session,
                data=ProductCreate(
                    sku=f"SKU-{uuid.uuid4().hex[:12]}",
                    name=name,
                    description="",
                    category_id=category.id,
                    price=MoneyIn(amount=amount, currency="EUR"),
                ),
            )
            await inventory.update_stock(session, product_id=product.id, on_hand=on_hand)
        return product.id

    async def add_to_cart(self, user_id: uuid.UUID, product_id: int, quantity: int) -> None:
        await cart.update_item(
            self.db,
            user_id=user_id,
            product_id=product_id,
            quantity=quantity,
            catalog=CatalogEntries(self.db),
            max_lines=100,
        )

    async def cart_of(self, user_id: uuid.UUID) -> dict[int, int]:
        async with self.db.reader() as session:
            lines = await cart.list_lines(session, user_id=user_id)
        return {line.product_id: line.quantity for line in lines}

    async def checkout(
        self,
        user_id: uuid.UUID,
        *,
        key: str = "key-1",
        card: str = APPROVED_CARD,
        ports: CheckoutPorts | None = None,
    ) -> StoredResponse:
        return await orders.create_order(
            self.db,
            ports=ports or self.ports,
            settings=SETTINGS,
            user_id=user_id,
            idempotency_key=key,
            data=order_create(card),
        )

    async def order(self, user_id: uuid.UUID, key: str = "key-1") -> Order:
        async with self.db.reader() as session:
            order = await orders_repository.get_by_key(session, user_id, key)
        assert order is not None
        return order

    async def stock(self, product_id: int) -> tuple[int, int]:
        async with self.db.reader() as session:
            item = await inventory.get_item(session, product_id=product_id)
        return item.on_hand, item.reserved

    async def expire_leases(self) -> None:
        """Every lease runs out (time passing, for a test)."""
        async with self.db.writer() as session, session.begin():
            await session.execute(
                sa.update(Order).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )

    async def resume(self) -> int:
        """Recovery, as it runs once every lease and deadline has run out (time passing)."""
        await self.expire_leases()
        return await orders.resume_pending_orders(self.db, ports=self.ports, settings=LATER)

    async def payments_of(self, order_id: uuid.UUID) -> list[Payment]:
        async with self.db.reader() as session:
            rows = await payments.list_payments(
                session, principal=ADMIN, order_id=order_id, limit=100, offset=0
            )
        return list(rows)


@pytest.fixture
async def shop(connect: Connect) -> Shop:
    db = await connect(None)
    return Shop(db, checkout_ports(db, PaymentsRuntime.from_settings(PAYMENTS)))


async def test_a_full_checkout_and_its_cancellation(shop: Shop) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=10)
    cup = await shop.product("Cup", 250, on_hand=10)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)
    await shop.add_to_cart(user, cup, 4)

    result = await shop.checkout(user)

    assert result.status_code == 201
    assert result.body["status"] == "confirmed"
    assert result.body["total"] == {"amount": 4_000, "currency": "EUR"}
    order_id = uuid.UUID(result.body["id"])
    assert await shop.stock(teapot) == (8, 0)
    assert await shop.stock(cup) == (6, 0)
    assert await shop.cart_of(user) == {}
    (payment,) = await shop.payments_of(order_id)
    assert payment.status == PaymentStatus.CAPTURED.value
    assert payment.money == Money(amount=4_000, currency="EUR")
    assert payment.user_id == user
    async with shop.db.reader() as session:
        stored = await orders.get_order(
            session, principal=Principal(user, Role.CUSTOMER), order_id=order_id
        )
    assert OrderRead.model_validate(stored).model_dump(mode="json") == result.body
    assert await shop.checkout(user) == result  # the replay, from the database

    cancelled = await orders.cancel_order(
        shop.db,
        ports=shop.ports,
        settings=SETTINGS,
        principal=Principal(user, Role.CUSTOMER),
        order_id=order_id,
    )

    assert cancelled.status == OrderStatus.CANCELLED.value
    assert await shop.stock(teapot) == (10, 0)
    assert await shop.stock(cup) == (10, 0)
    (refunded,) = await shop.payments_of(order_id)
    assert refunded.status == PaymentStatus.REFUNDED.value
    assert refunded.refunded_at is not None
    again = await orders.cancel_order(
        shop.db,
        ports=shop.ports,
        settings=SETTINGS,
        principal=Principal(user, Role.CUSTOMER),
        order_id=order_id,
    )
    assert again.status == OrderStatus.CANCELLED.value
    assert await shop.stock(teapot) == (10, 0)


@pytest.mark.parametrize(
    ("card", "status", "payment_status"),
    [(DECLINED_CARD, 402, PaymentStatus.DECLINED), (TIMEOUT_CARD, 504, PaymentStatus.TIMED_OUT)],
    ids=["declined", "timed-out"],
)
async def test_a_failed_payment_releases_the_stock(
    shop: Shop, card: str, status: int, payment_status: PaymentStatus
) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=3)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 3)

    result = await shop.checkout(user, card=card)

    assert result.status_code == status
    order = await shop.order(user)
    assert order.status == OrderStatus.REJECTED.value
    assert await shop.stock(teapot) == (3, 0)
    assert [p.status for p in await shop.payments_of(order.id)] == [payment_status.value]
    assert await shop.cart_of(user) == {teapot: 3}


async def test_out_of_stock_charges_nothing(shop: Shop) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=2)
    cup = await shop.product("Cup", 250, on_hand=10)
    user = uuid.uuid4()
    await shop.add_to_cart(user, cup, 1)
    await shop.add_to_cart(user, teapot, 3)

    result = await shop.checkout(user)

    assert result.status_code == 409
    assert result.body["type"] == "/problems/out-of-stock"
    order = await shop.order(user)
    assert order.failure_reason == "out-of-stock"
    assert await shop.payments_of(order.id) == []
    assert await shop.stock(teapot) == (2, 0)
    assert await shop.stock(cup) == (10, 0)


async def test_two_customers_racing_for_the_last_unit(shop: Shop) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=1)
    users = [uuid.uuid4() for _ in range(4)]
    for user in users:
        await shop.add_to_cart(user, teapot, 1)
    results: list[StoredResponse] = []

    async def buy(user: uuid.UUID) -> None:
        results.append(await shop.checkout(user))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for user in users:
                tasks.start_soon(buy, user)

    assert sorted(r.status_code for r in results) == [201, 409, 409, 409]
    assert await shop.stock(teapot) == (0, 0)
    captured = [
        p
        for user in users
        for p in await shop.payments_of((await shop.order(user)).id)
        if p.status == PaymentStatus.CAPTURED.value
    ]
    assert len(captured) == 1


# --------------------------------------------------------------------------- crashes


class ProcessDied(BaseException):
    """Stands for the process dying: no ``except Exception`` in the saga sees it."""


@dataclass
class CrashAfterCharge:
    """The real payments adapter, but whatever runs the saga dies right after a charge."""

    inner: Payments
    crash: BaseException

    async def charge(
        self,
        *,
        key: str,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        amount: Money,
        card_number: str,
    ) -> ChargeStatus:
        await self.inner.charge(
            key=key, order_id=order_id, user_id=user_id, amount=amount, card_number=card_number
        )
        raise self.crash

    async def status(self, key: str) -> ChargeStatus | None:
        return await self.inner.status(key)

    async def refund(self, *, key: str, order_id: uuid.UUID, user_id: uuid.UUID) -> None:
        await self.inner.refund(key=key, order_id=order_id, user_id=user_id)


async def test_a_checkout_that_died_after_the_charge_is_confirmed_by_recovery(
    shop: Shop,
) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=5)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)
    dying = replace(shop.ports, payments=CrashAfterCharge(shop.ports.payments, ProcessDied()))

    with pytest.raises(ProcessDied):
        await shop.checkout(user, ports=dying)

    pending = await shop.order(user)
    assert pending.status == OrderStatus.PENDING.value
    assert await shop.stock(teapot) == (5, 2)
    assert [p.status for p in await shop.payments_of(pending.id)] == ["captured"]

    resumed = await shop.resume()

    assert resumed == 1
    order = await shop.order(user)
    assert order.status == OrderStatus.CONFIRMED.value
    assert order.response_status == 201
    assert await shop.stock(teapot) == (3, 0)
    (payment,) = await shop.payments_of(order.id)
    assert payment.status == PaymentStatus.CAPTURED.value
    assert payment.money == Money(amount=3_000, currency="EUR")
    replay = await shop.checkout(user)
    assert replay.status_code == 201
    assert replay.body["id"] == str(order.id)
    assert replay.body["status"] == "confirmed"
    assert await shop.resume() == 0
    assert len(await shop.payments_of(order.id)) == 1


async def test_an_error_after_the_charge_is_finished_by_the_checkout_itself(
    shop: Shop,
) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=5)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)
    failing = replace(
        shop.ports, payments=CrashAfterCharge(shop.ports.payments, RuntimeError("network"))
    )

    with pytest.raises(RuntimeError, match="network"):
        await shop.checkout(user, ports=failing)

    order = await shop.order(user)
    assert order.status == OrderStatus.CONFIRMED.value
    assert await shop.stock(teapot) == (3, 0)
    assert [p.status for p in await shop.payments_of(order.id)] == ["captured"]
    assert await shop.resume() == 0


async def test_a_checkout_that_died_before_paying_is_rejected_and_released(
    shop: Shop,
) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=5)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)

    @dataclass
    class DieBeforeCharge(CrashAfterCharge):
        async def charge(self, **_: object) -> ChargeStatus:
            raise self.crash

    dying = replace(shop.ports, payments=DieBeforeCharge(shop.ports.payments, ProcessDied()))
    with pytest.raises(ProcessDied):
        await shop.checkout(user, ports=dying)
    assert await shop.stock(teapot) == (5, 2)

    assert await shop.resume() == 1

    order = await shop.order(user)
    assert order.status == OrderStatus.REJECTED.value
    assert order.failure_reason == "checkout-interrupted"
    assert await shop.stock(teapot) == (5, 0)
    assert await shop.payments_of(order.id) == []
    assert await shop.cart_of(user) == {teapot: 2}


# --------------------------------------------------------------------------- two orders replicas


@dataclass
class SlowCharge:
    """The real payments adapter, with the saga's runner stalled before or after the charge."""

    inner: Payments
    before: float = 0.0
    after: float = 0.0

    async def charge(self, **kwargs: Any) -> ChargeStatus:
        await anyio.sleep(self.before)
        status = await self.inner.charge(**kwargs)
        await anyio.sleep(self.after)
        return status

    async def status(self, key: str) -> ChargeStatus | None:
        return await self.inner.status(key)

    async def refund(self, *, key: str, order_id: uuid.UUID, user_id: uuid.UUID) -> None:
        await self.inner.refund(key=key, order_id=order_id, user_id=user_id)


async def replica(shop: Shop, connect: Connect) -> Shop:
    """A second orders process on the same database, with its own engine and connections."""
    db = await connect(None)
    return Shop(db, checkout_ports(db, PaymentsRuntime.from_settings(PAYMENTS)))


async def test_recovery_in_another_replica_leaves_a_live_checkout_alone(
    shop: Shop, connect: Connect
) -> None:
    """Before the lease, a grace of 0 (or a slow charge) let recovery void a live checkout."""
    other = await replica(shop, connect)
    teapot = await shop.product("Teapot", 1_500, on_hand=5)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)
    slow = replace(shop.ports, payments=SlowCharge(shop.ports.payments, before=0.6))
    answers: list[StoredResponse] = []

    async def checkout() -> None:
        answers.append(await shop.checkout(user, ports=slow))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(checkout)
        for _ in range(6):
            await anyio.sleep(0.1)
            assert (
                await orders.resume_pending_orders(other.db, ports=other.ports, settings=SETTINGS)
                == 0
            )

    assert answers[0].status_code == 201
    order = await shop.order(user)
    assert order.status == OrderStatus.CONFIRMED.value
    assert [p.status for p in await shop.payments_of(order.id)] == ["captured"]
    assert await shop.stock(teapot) == (3, 0)


async def test_a_checkout_that_stalls_past_its_lease_is_finished_one_way(
    shop: Shop, connect: Connect
) -> None:
    """The request stalls after its charge, past its lease; another replica's recovery
    finishes the order; the stalled request then answers what the order became."""
    other = await replica(shop, connect)
    teapot = await shop.product("Teapot", 1_500, on_hand=5)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)
    stalled = replace(shop.ports, payments=SlowCharge(shop.ports.payments, after=1.5))
    answers: list[StoredResponse] = []
    short = SETTINGS.model_copy(update={"recovery_grace_seconds": 1})

    async def checkout() -> None:
        answers.append(
            await orders.create_order(
                shop.db,
                ports=stalled,
                settings=short,
                user_id=user,
                idempotency_key="key-1",
                data=ORDER,
            )
        )

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(checkout)
        # Recovery looks every 0.1 s, as its loop would, until the lease has run out.
        for _ in range(100):
            await anyio.sleep(0.1)
            if await orders.resume_pending_orders(other.db, ports=other.ports, settings=short):
                break
        else:
            pytest.fail("recovery never took the stalled checkout over")

    order = await shop.order(user)
    assert order.status == OrderStatus.CONFIRMED.value
    assert answers == [StoredResponse(201, order.response_body or {})]
    assert [p.status for p in await shop.payments_of(order.id)] == ["captured"]
    assert await shop.stock(teapot) == (3, 0)


async def test_two_replicas_finishing_one_order_agree(
    shop: Shop, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runners finish one order at once, one confirming and one rejecting (a request
    and a recovery that decided otherwise). Both answer the one outcome the row holds:
    before, both read ``pending`` and both wrote, each answering its own outcome."""
    other = await replica(shop, connect)
    teapot = await shop.product("Teapot", 1_500, on_hand=5)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 1)
    stuck = replace(shop.ports, payments=CrashAfterCharge(shop.ports.payments, ProcessDied()))
    with pytest.raises(ProcessDied):
        await shop.checkout(user, ports=stuck)
    await shop.expire_leases()
    pending = await shop.order(user)
    original = orders_repository.get_order
    arrived = 0
    both = anyio.Event()

    async def meeting(session: Any, order_id: uuid.UUID) -> Order | None:
        # Each finisher reads the order inside its transaction: once read, wait for the other
        # one to have read it too (or long enough to show it is held back), so that both
        # would decide on "pending".
        nonlocal arrived
        order = await original(session, order_id)
        arrived += 1
        if arrived == 2:
            both.set()
        with anyio.move_on_after(1.0):
            await both.wait()
        return order

    monkeypatch.setattr(orders_repository, "get_order", meeting)
    answers: dict[str, StoredResponse] = {}

    async def finish(name: str, runner: Any, status: OrderStatus, error: Any = None) -> None:
        answers[name] = await runner.finish(status, error=error)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                finish,
                "a",
                orders._Runner(shop.db, pending.id, TERM, utcnow()),
                OrderStatus.CONFIRMED,
            )
            tasks.start_soon(
                finish,
                "b",
                orders._Runner(other.db, pending.id, TERM, utcnow()),
                OrderStatus.REJECTED,
                CheckoutInterrupted("decided otherwise"),
            )
    monkeypatch.setattr(orders_repository, "get_order", original)

    order = await shop.order(user)
    assert order.response_status is not None
    assert (
        answers["a"]
        == answers["b"]
        == StoredResponse(order.response_status, order.response_body or {})
    )


async def test_a_cancellation_that_died_midway_is_completed_by_recovery(shop: Shop) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=5)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)
    result = await shop.checkout(user)
    order_id = uuid.UUID(result.body["id"])

    @dataclass
    class DieBeforeRestock:
        inner: Any

        async def restock(self, reservation_id: uuid.UUID) -> None:
            raise ProcessDied()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    dying = replace(shop.ports, stock=DieBeforeRestock(shop.ports.stock))
    with pytest.raises(ProcessDied):
        await orders.cancel_order(
            shop.db,
            ports=dying,
            settings=SETTINGS,
            principal=Principal(user, Role.CUSTOMER),
            order_id=order_id,
        )
    half = await shop.order(user)
    assert (half.status, half.saga_step) == ("confirmed", "cancelling")
    assert [p.status for p in await shop.payments_of(order_id)] == ["refunded"]
    assert await shop.stock(teapot) == (3, 0)

    assert await shop.resume() == 1

    done = await shop.order(user)
    assert done.status == OrderStatus.CANCELLED.value
    assert await shop.stock(teapot) == (5, 0)
    assert [p.status for p in await shop.payments_of(order_id)] == ["refunded"]
    assert await shop.resume() == 0
