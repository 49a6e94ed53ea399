"""Each publishing context records the right event at each change, in the change's own
transaction, and nothing for a change that did not happen (a replay, a refusal, a no-op).

The service functions are driven as the routes and the in-process bindings drive them
(checkout through ``bindings.inprocess.checkout_ports``); the outbox rows are read back.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Table, select

from bindings.inprocess import checkout_ports
from shop.catalog import service as catalog
from shop.catalog.models import outbox as catalog_outbox
from shop.catalog.schemas import CategoryCreate, ProductCreate, ProductUpdate
from shop.inventory import service as inventory
from shop.inventory.exceptions import OutOfStock, ProductNotFound, StockBelowReserved
from shop.inventory.models import outbox as inventory_outbox
from shop.kernel.db import Database
from shop.kernel.security import Principal, Role
from shop.kernel.types import MoneyIn
from shop.orders import service as orders
from shop.orders.models import outbox as orders_outbox
from shop.payments.dependencies import PaymentsRuntime
from shop.payments.models import outbox as payments_outbox
from tests.integration.conftest import Connect
from tests.integration.test_checkout import (
    DECLINED_CARD,
    PAYMENTS,
    SETTINGS,
    CrashAfterCharge,
    ProcessDied,
    Shop,
)

pytestmark = pytest.mark.anyio

Recorded = tuple[str, str, dict[str, Any]]
"""``(type, aggregate_id, payload)`` of an outbox row."""


class Outbox:
    """One context's outbox, read in order: :meth:`new` gives the rows since the last call."""

    def __init__(self, db: Database, table: Table) -> None:
        self._db = db
        self._table = table
        self._seen = 0

    async def new(self) -> list[Recorded]:
        table = self._table
        async with self._db.reader() as session:
            rows = (
                await session.execute(
                    select(table.c.position, table.c.type, table.c.aggregate_id, table.c.payload)
                    .where(table.c.position > self._seen)
                    .order_by(table.c.position)
                )
            ).all()
        if rows:
            self._seen = rows[-1][0]
        return [(row[1], row[2], row[3]) for row in rows]


def stock(product_id: int, on_hand: int, reserved: int) -> Recorded:
    return (
        "inventory.StockChanged",
        str(product_id),
        {
            "product_id": product_id,
            "on_hand": on_hand,
            "reserved": reserved,
            "available": on_hand - reserved,
        },
    )


# --------------------------------------------------------------------------- inventory


@pytest.fixture
async def db(connect: Connect) -> Database:
    return await connect(["catalog", "inventory"])


async def set_stock(db: Database, product_id: int, on_hand: int) -> None:
    async with db.writer() as session, session.begin():
        await inventory.update_stock(session, product_id=product_id, on_hand=on_hand)


async def reserve(db: Database, reservation: uuid.UUID, lines: list[tuple[int, int]]) -> None:
    async with db.writer() as session, session.begin():
        await inventory.create_reservation(session, reservation_id=reservation, lines=lines)


async def test_a_stock_update_records_the_products_new_numbers(db: Database) -> None:
    box = Outbox(db, inventory_outbox)

    await set_stock(db, 7, 10)
    assert await box.new() == [stock(7, 10, 0)]

    await set_stock(db, 7, 4)
    assert await box.new() == [stock(7, 4, 0)]

    await reserve(db, uuid.uuid4(), [(7, 3)])
    await box.new()
    with pytest.raises(StockBelowReserved):
        await set_stock(db, 7, 2)
    assert await box.new() == []


async def test_an_admins_update_records_only_for_a_product_the_catalog_knows(db: Database) -> None:
    box = Outbox(db, inventory_outbox)

    class Directory:
        async def exists(self, product_id: int) -> bool:
            return product_id == 3

    await inventory.update_item(db, product_id=3, on_hand=5, products=Directory())
    with pytest.raises(ProductNotFound):
        await inventory.update_item(db, product_id=4, on_hand=5, products=Directory())

    assert await box.new() == [stock(3, 5, 0)]


async def test_each_reservation_step_records_every_product_it_moves(db: Database) -> None:
    box = Outbox(db, inventory_outbox)
    await set_stock(db, 1, 10)
    await set_stock(db, 2, 5)
    assert await box.new() == [stock(1, 10, 0), stock(2, 5, 0)]
    sold = uuid.uuid4()

    await reserve(db, sold, [(2, 1), (1, 2), (2, 2)])
    assert await box.new() == [stock(1, 10, 2), stock(2, 5, 3)]

    await reserve(db, sold, [(2, 1), (1, 2), (2, 2)])  # a replay holds nothing more
    assert await box.new() == []

    async with db.writer() as session, session.begin():
        await inventory.commit_reservation(session, reservation_id=sold)
    assert await box.new() == [stock(1, 8, 0), stock(2, 2, 0)]

    async with db.writer() as session, session.begin():
        await inventory.commit_reservation(session, reservation_id=sold)
    assert await box.new() == []

    async with db.writer() as session, session.begin():
        await inventory.return_reservation(session, reservation_id=sold)
    assert await box.new() == [stock(1, 10, 0), stock(2, 5, 0)]

    released = uuid.uuid4()
    await reserve(db, released, [(1, 4)])
    assert await box.new() == [stock(1, 10, 4)]
    async with db.writer() as session, session.begin():
        await inventory.release_reservation(session, reservation_id=released)
        await inventory.release_reservation(session, reservation_id=released)
    assert await box.new() == [stock(1, 10, 0)]


async def test_a_reservation_that_moves_no_stock_records_nothing(db: Database) -> None:
    box = Outbox(db, inventory_outbox)
    await set_stock(db, 1, 1)
    assert await box.new() == [stock(1, 1, 0)]

    with pytest.raises(OutOfStock):
        await reserve(db, uuid.uuid4(), [(1, 1), (2, 1)])  # product 2 has no stock
    # Released before it was ever reserved: a tombstone, no stock moved.
    async with db.writer() as session, session.begin():
        await inventory.release_reservation(session, reservation_id=uuid.uuid4())
        await inventory.commit_reservation(session, reservation_id=uuid.uuid4())

    assert await box.new() == []


# --------------------------------------------------------------------------- catalog


async def test_catalog_records_each_change_of_a_product(db: Database) -> None:
    box = Outbox(db, catalog_outbox)
    async with db.writer() as session, session.begin():
        category = await catalog.create_category(
            session, data=CategoryCreate(slug="pots", name="Pots")
        )
        product = await catalog.create_product(
            session,
            data=ProductCreate(
                sku="POT-1",
                name="Teapot",
                category_id=category.id,
                price=MoneyIn(amount=1_999, currency="EUR"),
            ),
        )
    changed = {
        "product_id": product.id,
        "sku": "POT-1",
        "name": "Teapot",
        "category_id": category.id,
        "price_amount": 1_999,
        "currency": "EUR",
    }
    assert await box.new() == [("catalog.ProductChanged", str(product.id), changed)]

    async with db.writer() as session, session.begin():
        await catalog.update_product(
            session,
            product_id=product.id,
            data=ProductUpdate(name="Big teapot", price=MoneyIn(amount=2_500, currency="EUR")),
        )
    changed |= {"name": "Big teapot", "price_amount": 2_500}
    assert await box.new() == [("catalog.ProductChanged", str(product.id), changed)]

    async with db.writer() as session, session.begin():
        await catalog.update_product(session, product_id=product.id, data=ProductUpdate())
        await catalog.update_product(
            session, product_id=product.id, data=ProductUpdate(name="Big teapot")
        )
    assert await box.new() == []  # nothing changed

    async with db.writer() as session, session.begin():
        await catalog.delete_product(session, product_id=product.id)
    assert await box.new() == [
        ("catalog.ProductDeleted", str(product.id), {"product_id": product.id})
    ]


async def test_a_change_that_rolls_back_records_nothing(db: Database) -> None:
    box = Outbox(db, catalog_outbox)

    async def failed_change() -> None:
        async with db.writer() as session, session.begin():
            category = await catalog.create_category(
                session, data=CategoryCreate(slug="cups", name="Cups")
            )
            await catalog.create_product(
                session,
                data=ProductCreate(
                    sku="CUP-1",
                    name="Cup",
                    category_id=category.id,
                    price=MoneyIn(amount=500, currency="EUR"),
                ),
            )
            raise RuntimeError("the request failed after the change")

    with pytest.raises(RuntimeError):
        await failed_change()

    assert await box.new() == []


# --------------------------------------------------------------------------- orders, payments


@pytest.fixture
async def shop(connect: Connect) -> Shop:
    db = await connect(None)
    return Shop(db, checkout_ports(db, PaymentsRuntime.from_settings(PAYMENTS)))


def status(order_id: uuid.UUID, user: uuid.UUID, value: str, reason: str | None = None) -> Recorded:
    return (
        "orders.OrderStatusChanged",
        str(order_id),
        {"order_id": str(order_id), "user_id": str(user), "status": value, "reason": reason},
    )


async def test_a_checkout_and_its_cancellation_record_each_status_and_payment(
    shop: Shop,
) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=10)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)
    order_box = Outbox(shop.db, orders_outbox)
    payment_box = Outbox(shop.db, payments_outbox)
    stock_box = Outbox(shop.db, inventory_outbox)
    await stock_box.new()

    result = await shop.checkout(user)

    order_id = uuid.UUID(result.body["id"])
    assert await order_box.new() == [
        status(order_id, user, "pending"),
        status(order_id, user, "confirmed"),
    ]
    (payment,) = await shop.payments_of(order_id)
    money = {"amount": 3_000, "currency": "EUR"}
    captured = {"payment_id": str(payment.id), "order_id": str(order_id), **money}
    assert await payment_box.new() == [("payments.PaymentCaptured", str(payment.id), captured)]
    assert await stock_box.new() == [stock(teapot, 10, 2), stock(teapot, 8, 0)]

    await shop.checkout(user)  # the replay
    assert await order_box.new() == []
    assert await payment_box.new() == []

    async def cancel() -> None:
        await orders.cancel_order(
            shop.db,
            ports=shop.ports,
            settings=SETTINGS,
            principal=Principal(user, Role.CUSTOMER),
            order_id=order_id,
        )

    await cancel()
    assert await order_box.new() == [status(order_id, user, "cancelled", "cancel-requested")]
    assert await payment_box.new() == [("payments.PaymentRefunded", str(payment.id), captured)]
    assert await stock_box.new() == [stock(teapot, 10, 0)]

    await cancel()  # again: nothing more happens
    assert await order_box.new() == []
    assert await payment_box.new() == []
    assert await stock_box.new() == []


@pytest.mark.parametrize(
    ("card", "on_hand", "reason"),
    [(DECLINED_CARD, 5, "payment-declined"), (None, 1, "out-of-stock")],
    ids=["declined", "out-of-stock"],
)
async def test_a_rejected_checkout_records_why_and_no_payment(
    shop: Shop, card: str | None, on_hand: int, reason: str
) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=on_hand)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 2)
    order_box = Outbox(shop.db, orders_outbox)
    payment_box = Outbox(shop.db, payments_outbox)

    result = await (shop.checkout(user, card=card) if card else shop.checkout(user))

    assert result.status_code in (402, 409)
    order = await shop.order(user)
    assert await order_box.new() == [
        status(order.id, user, "pending"),
        status(order.id, user, "rejected", reason),
    ]
    assert await payment_box.new() == []


async def test_recovery_records_the_status_it_settles_on(shop: Shop) -> None:
    teapot = await shop.product("Teapot", 1_500, on_hand=5)
    user = uuid.uuid4()
    await shop.add_to_cart(user, teapot, 1)
    order_box = Outbox(shop.db, orders_outbox)
    payment_box = Outbox(shop.db, payments_outbox)
    dying = replace(shop.ports, payments=CrashAfterCharge(shop.ports.payments, ProcessDied()))
    with pytest.raises(ProcessDied):
        await shop.checkout(user, ports=dying)
    order = await shop.order(user)
    assert await order_box.new() == [status(order.id, user, "pending")]
    assert [kind for kind, _, _ in await payment_box.new()] == ["payments.PaymentCaptured"]

    assert await shop.resume() == 1

    assert await order_box.new() == [status(order.id, user, "confirmed")]
    assert await shop.resume() == 0
    assert await order_box.new() == []
