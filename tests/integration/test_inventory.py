"""Inventory on a real database: conditional updates that never oversell, idempotent
reservation transitions, and the CHECK constraints behind them."""

from __future__ import annotations

import random
import uuid
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from shop.inventory import repository, service
from shop.inventory.exceptions import (
    InventoryItemNotFound,
    OutOfStock,
    ProductNotFound,
    ReservationClosed,
    StockBelowReserved,
)
from shop.inventory.models import ReservationLine, ReservationStatus, StockItem
from shop.inventory.schemas import ReservationAction
from shop.kernel.db import Database
from tests.integration.conftest import Connect

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(connect: Connect) -> Database:
    return await connect(["inventory"])


async def stock(db: Database, product_id: int, on_hand: int) -> None:
    async with db.writer() as session, session.begin():
        await service.update_stock(session, product_id=product_id, on_hand=on_hand)


async def levels(db: Database, product_id: int) -> tuple[int, int, int]:
    """(on_hand, reserved, available) as the database holds them now."""
    async with db.reader() as session:
        item = await service.get_item(session, product_id=product_id)
        return item.on_hand, item.reserved, item.available


async def reserve(
    db: Database, lines: list[tuple[int, int]], rid: uuid.UUID | None = None
) -> uuid.UUID:
    reservation_id = rid or uuid.uuid4()
    async with db.writer() as session, session.begin():
        await service.create_reservation(session, reservation_id=reservation_id, lines=lines)
    return reservation_id


async def reservation_rows(db: Database) -> list[ReservationLine]:
    async with db.reader() as session:
        return list(await session.scalars(sa.select(ReservationLine)))


async def commit(db: Database, rid: uuid.UUID) -> ReservationStatus | None:
    async with db.writer() as session, session.begin():
        return await service.commit_reservation(session, reservation_id=rid)


async def release(db: Database, rid: uuid.UUID) -> ReservationStatus | None:
    async with db.writer() as session, session.begin():
        return await service.release_reservation(session, reservation_id=rid)


async def give_back(db: Database, rid: uuid.UUID) -> ReservationStatus | None:
    async with db.writer() as session, session.begin():
        return await service.return_reservation(session, reservation_id=rid)


# --------------------------------------------------------------------------- no overselling


async def test_concurrent_reservations_for_the_last_units_never_oversell(db: Database) -> None:
    await stock(db, 1, 5)
    outcomes: list[bool] = []

    async def attempt() -> None:
        try:
            await reserve(db, [(1, 1)])
        except OutOfStock:
            outcomes.append(False)
        else:
            outcomes.append(True)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(attempt)

    assert outcomes.count(True) == 5
    assert outcomes.count(False) == 15
    assert await levels(db, 1) == (5, 5, 0)
    assert len(await reservation_rows(db)) == 5


async def test_concurrent_reservations_of_mixed_sizes_hold_exactly_what_succeeded(
    db: Database,
) -> None:
    await stock(db, 1, 10)
    sizes = [random.randint(1, 3) for _ in range(20)]
    held: list[int] = []
    refused: list[int] = []

    async def attempt(quantity: int) -> None:
        try:
            await reserve(db, [(1, quantity)])
        except OutOfStock:
            refused.append(quantity)
        else:
            held.append(quantity)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for quantity in sizes:
                tasks.start_soon(attempt, quantity)

    on_hand, reserved, available = await levels(db, 1)
    assert (on_hand, reserved) == (10, sum(held))
    assert reserved <= 10
    assert len(held) + len(refused) == len(sizes)
    # Stock only went down, so whatever was refused still does not fit.
    assert all(available < quantity for quantity in refused)
    assert sorted(r.quantity for r in await reservation_rows(db)) == sorted(held)


async def test_a_reservation_holds_every_line_or_none(db: Database) -> None:
    await stock(db, 1, 5)
    await stock(db, 2, 1)

    with pytest.raises(OutOfStock) as caught:
        await reserve(db, [(1, 2), (2, 3), (3, 1)])

    assert caught.value.extra["product_ids"] == [2, 3]  # 3 has no stock row at all
    assert await levels(db, 1) == (5, 0, 5)
    assert await levels(db, 2) == (1, 0, 1)
    assert await reservation_rows(db) == []


async def test_repeated_products_in_one_reservation_are_held_together(db: Database) -> None:
    await stock(db, 1, 5)

    with pytest.raises(OutOfStock):
        await reserve(db, [(1, 3), (1, 3)])  # 6 > 5, though each line alone fits
    rid = await reserve(db, [(1, 2), (1, 3)])

    assert await levels(db, 1) == (5, 5, 0)
    rows = await reservation_rows(db)
    assert [(r.reservation_id, r.product_id, r.quantity) for r in rows] == [(rid, 1, 5)]


async def test_reservations_in_opposite_orders_do_not_deadlock(db: Database) -> None:
    await stock(db, 1, 100)
    await stock(db, 2, 100)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for index in range(16):
                lines = [(1, 1), (2, 1)] if index % 2 else [(2, 1), (1, 1)]
                tasks.start_soon(reserve, db, lines)

    assert await levels(db, 1) == (100, 16, 84)
    assert await levels(db, 2) == (100, 16, 84)


async def test_replaying_a_reservation_holds_nothing_more(db: Database) -> None:
    await stock(db, 1, 5)
    rid = await reserve(db, [(1, 2)])

    async with db.writer() as session, session.begin():
        again = await service.create_reservation(session, reservation_id=rid, lines=[(1, 2)])

    assert again is ReservationStatus.RESERVED
    assert await levels(db, 1) == (5, 2, 3)
    await commit(db, rid)
    async with db.writer() as session, session.begin():
        replay = await service.create_reservation(session, reservation_id=rid, lines=[(1, 2)])
    assert replay is ReservationStatus.COMMITTED
    assert await levels(db, 1) == (3, 0, 3)


# --------------------------------------------------------------------------- transitions


async def test_commit_then_return_are_idempotent(db: Database) -> None:
    await stock(db, 1, 10)
    await stock(db, 2, 4)
    rid = await reserve(db, [(1, 3), (2, 4)])
    assert await levels(db, 1) == (10, 3, 7)

    assert await commit(db, rid) is ReservationStatus.COMMITTED
    assert await commit(db, rid) is ReservationStatus.COMMITTED
    assert await release(db, rid) is ReservationStatus.COMMITTED  # too late to release
    assert await levels(db, 1) == (7, 0, 7)
    assert await levels(db, 2) == (0, 0, 0)

    assert await give_back(db, rid) is ReservationStatus.RETURNED
    assert await give_back(db, rid) is ReservationStatus.RETURNED
    assert await commit(db, rid) is ReservationStatus.RETURNED
    assert await levels(db, 1) == (10, 0, 10)
    assert await levels(db, 2) == (4, 0, 4)


async def test_release_is_idempotent_and_final(db: Database) -> None:
    await stock(db, 1, 10)
    rid = await reserve(db, [(1, 3)])

    assert await release(db, rid) is ReservationStatus.RELEASED
    assert await release(db, rid) is ReservationStatus.RELEASED
    assert await commit(db, rid) is ReservationStatus.RELEASED
    assert await give_back(db, rid) is ReservationStatus.RELEASED

    assert await levels(db, 1) == (10, 0, 10)
    assert {r.status for r in await reservation_rows(db)} == {ReservationStatus.RELEASED.value}


async def test_transitions_of_an_unknown_reservation_do_nothing(db: Database) -> None:
    await stock(db, 1, 10)
    unknown = uuid.uuid4()

    assert await commit(db, unknown) is None
    assert await give_back(db, unknown) is None
    assert await levels(db, 1) == (10, 0, 10)


async def test_a_release_that_overtakes_its_reserve_makes_the_reserve_hold_nothing(
    db: Database,
) -> None:
    """A compensation can arrive before the call it compensates (a slow or retried reserve);
    the release leaves a tombstone so the late reserve is refused and holds no stock."""
    await stock(db, 1, 10)
    rid = uuid.uuid4()

    assert await release(db, rid) is ReservationStatus.RELEASED
    assert await release(db, rid) is ReservationStatus.RELEASED
    with pytest.raises(ReservationClosed):
        await reserve(db, [(1, 3)], rid)
    assert await commit(db, rid) is ReservationStatus.RELEASED
    assert await levels(db, 1) == (10, 0, 10)


async def test_a_commit_racing_a_release_applies_exactly_one(db: Database) -> None:
    await stock(db, 1, 10)
    rids = [await reserve(db, [(1, 1)]) for _ in range(8)]
    results: dict[tuple[uuid.UUID, str], ReservationStatus | None] = {}

    async def run(name: str, rid: uuid.UUID) -> None:
        step = commit if name == "commit" else release
        results[(rid, name)] = await step(db, rid)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for rid in rids:
                tasks.start_soon(run, "commit", rid)
                tasks.start_soon(run, "release", rid)

    rows = {r.reservation_id: r.status for r in await reservation_rows(db)}
    committed = [rid for rid in rids if rows[rid] == ReservationStatus.COMMITTED.value]
    for rid in rids:
        final = ReservationStatus(rows[rid])
        assert final in (ReservationStatus.COMMITTED, ReservationStatus.RELEASED)
        assert results[(rid, "commit")] is final
        assert results[(rid, "release")] is final
    assert await levels(db, 1) == (10 - len(committed), 0, 10 - len(committed))


# --------------------------------------------------------------------------- stock levels


async def test_update_stock_creates_then_sets_but_never_below_reserved(db: Database) -> None:
    async with db.reader() as session:
        with pytest.raises(InventoryItemNotFound):
            await service.get_item(session, product_id=1)

    await stock(db, 1, 5)
    await reserve(db, [(1, 3)])
    await stock(db, 1, 8)
    assert await levels(db, 1) == (8, 3, 5)

    with pytest.raises(StockBelowReserved):
        await stock(db, 1, 2)
    assert await levels(db, 1) == (8, 3, 5)

    await stock(db, 1, 3)
    assert await levels(db, 1) == (3, 3, 0)


class Directory:
    """The catalog as inventory sees it, noting how many of inventory's connections are
    checked out whenever it is asked."""

    def __init__(self, db: Database, known: set[int]) -> None:
        self.db = db
        self.known = known
        self.connections_out: list[int] = []

    async def exists(self, product_id: int) -> bool:
        self.connections_out.append(self.db.engine.pool.checkedout())  # type: ignore[attr-defined]
        return product_id in self.known


async def test_update_item_asks_the_catalog_before_opening_its_transaction(db: Database) -> None:
    products = Directory(db, {1})

    item = await service.update_item(db, product_id=1, on_hand=4, products=products)
    with pytest.raises(ProductNotFound):
        await service.update_item(db, product_id=2, on_hand=4, products=products)

    assert (item.product_id, item.on_hand, item.available) == (1, 4, 4)
    assert await levels(db, 1) == (4, 0, 4)
    async with db.reader() as session:
        with pytest.raises(InventoryItemNotFound):
            await service.get_item(session, product_id=2)
    assert products.connections_out == [0, 0]


async def test_update_reservation_applies_the_named_action(db: Database) -> None:
    await stock(db, 1, 5)
    rid = await reserve(db, [(1, 2)])

    async def act(action: ReservationAction) -> ReservationStatus | None:
        async with db.writer() as session, session.begin():
            return await service.update_reservation(session, reservation_id=rid, action=action)

    assert await act(ReservationAction.COMMIT) == ReservationStatus.COMMITTED
    assert await levels(db, 1) == (3, 0, 3)
    assert await act(ReservationAction.RETURN) == ReservationStatus.RETURNED
    assert await act(ReservationAction.RELEASE) == ReservationStatus.RETURNED
    assert await levels(db, 1) == (5, 0, 5)


async def test_list_available_reports_zero_for_unknown_products(db: Database) -> None:
    await stock(db, 1, 5)
    await reserve(db, [(1, 2)])

    async with db.reader() as session:
        available = await service.list_available(session, product_ids=[1, 2])

    assert available == {1: 3, 2: 0}


@pytest.mark.parametrize(
    "values",
    [
        {"on_hand": -1, "reserved": 0},
        {"on_hand": 5, "reserved": -1},
        {"on_hand": 2, "reserved": 3},
    ],
    ids=["negative-on-hand", "negative-reserved", "reserved-above-on-hand"],
)
async def test_the_database_refuses_impossible_stock_rows(
    db: Database, values: dict[str, int]
) -> None:
    await stock(db, 1, 5)

    with pytest.raises(IntegrityError):
        async with db.writer() as session, session.begin():
            await session.execute(
                sa.update(StockItem).where(StockItem.product_id == 1).values(**values)
            )
    with pytest.raises(IntegrityError):
        async with db.writer() as session, session.begin():
            await session.execute(
                sa.insert(StockItem).values(product_id=2, updated_at=sa.func.now(), **values)
            )

    assert await levels(db, 1) == (5, 0, 5)


# --------------------------------------------------------------------------- races per reservation


async def test_a_release_that_overtakes_a_slow_reserve_leaves_nothing_reserved(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The saga's compensation (release) may run while its reserve is still committing.

    The reserve is held between its stock update and its reservation rows; the release
    runs meanwhile. Whichever order the database lets them commit in, no unit may stay
    reserved for good (before per-reservation serialization, PostgreSQL let the release
    leave a tombstone beside the late reserve's rows, leaking the units).
    """
    await stock(db, 1, 5)
    rid = uuid.uuid4()
    original = repository.add_reservation_lines
    holding = anyio.Event()
    released = anyio.Event()

    async def slow_lines(session: Any, reservation_id: uuid.UUID, lines: Any) -> None:
        if reservation_id == rid and not holding.is_set():
            holding.set()
            # Wait for the release, or long enough that a release blocked behind this
            # transaction (as it must be) shows it is blocked.
            with anyio.move_on_after(1.0):
                await released.wait()
        await original(session, reservation_id, lines)

    monkeypatch.setattr(repository, "add_reservation_lines", slow_lines)
    outcomes: dict[str, object] = {}

    async def reserving() -> None:
        try:
            await reserve(db, [(1, 2)], rid)
            outcomes["reserve"] = "reserved"
        except ReservationClosed:
            outcomes["reserve"] = "closed"

    async def releasing() -> None:
        await holding.wait()
        outcomes["release"] = await release(db, rid)
        released.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reserving)
            tasks.start_soon(releasing)

    assert outcomes["release"] is ReservationStatus.RELEASED
    assert await levels(db, 1) == (5, 0, 5), outcomes
    # A later release (the saga retried) changes nothing.
    assert await release(db, rid) is ReservationStatus.RELEASED
    assert await levels(db, 1) == (5, 0, 5)
