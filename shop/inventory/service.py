"""Inventory's rules: stock levels and the reserve -> commit | release life of a checkout.

Every transition is idempotent (keyed by the reservation id, the order's id) so that a
retried saga step is applied once. Every change of a product's stock numbers records a
:class:`~shop.inventory.events.StockChanged` in the same transaction (only a transition
that moves stock does: a replay records nothing). Each function runs inside the caller's transaction
(a failed reservation raises, and the caller's rollback undoes its partial holds), except
:func:`update_item`, which asks the catalog first and then commits a transaction of its own.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from shop.inventory import repository
from shop.inventory.events import StockChanged
from shop.inventory.exceptions import (
    InventoryItemNotFound,
    OutOfStock,
    ProductNotFound,
    ReservationClosed,
    StockBelowReserved,
)
from shop.inventory.models import ReservationStatus, StockItem, outbox
from shop.inventory.ports import ProductDirectory
from shop.inventory.schemas import ReservationAction
from shop.kernel.db import Database
from shop.kernel.events import record

SNAPSHOT_BATCH = 500
"""Stock rows :func:`snapshot` reads per query."""


def _changed(product_id: int, on_hand: int, reserved: int) -> tuple[str, StockChanged]:
    return str(product_id), StockChanged(
        product_id=product_id, on_hand=on_hand, reserved=reserved, available=on_hand - reserved
    )


async def _record_levels(session: AsyncSession, product_ids: Collection[int]) -> None:
    """Record the products' stock numbers as they stand now, in the change's transaction.

    Read after the change's own update, which holds the rows' locks until the commit: no
    other change of these products comes between, so the outbox position orders them.
    """
    levels = await repository.get_levels(session, set(product_ids))
    await record(session, outbox, *(_changed(*level) for level in levels))


async def snapshot(session: AsyncSession) -> AsyncIterator[tuple[str, StockChanged]]:
    """Every product's stock numbers as they stand, as the ``StockChanged`` a consumer
    would have received last about it (inventory's ``Context.snapshot``), by product id,
    all read in the session's transaction."""
    after: int | None = None
    while True:
        levels = await repository.list_levels(session, after=after, limit=SNAPSHOT_BATCH)
        for level in levels:
            yield _changed(*level)
        if len(levels) < SNAPSHOT_BATCH:
            return
        after = levels[-1][0]


async def get_item(session: AsyncSession, *, product_id: int) -> StockItem:
    item = await repository.get_item(session, product_id)
    if item is None:
        raise InventoryItemNotFound(f"No stock was ever recorded for product {product_id}.")
    return item


async def list_available(session: AsyncSession, *, product_ids: Collection[int]) -> dict[int, int]:
    found = await repository.available(session, set(product_ids))
    return {product_id: found.get(product_id, 0) for product_id in product_ids}


async def update_item(
    db: Database, *, product_id: int, on_hand: int, products: ProductDirectory
) -> StockItem:
    """Set the units on hand of a product the catalog knows (:class:`ProductNotFound`
    otherwise), in a write transaction of its own, opened once the catalog has answered."""
    if not await products.exists(product_id):
        raise ProductNotFound(f"There is no product {product_id}.")
    async with db.writer() as session, session.begin():
        return await update_stock(session, product_id=product_id, on_hand=on_hand)


async def update_stock(session: AsyncSession, *, product_id: int, on_hand: int) -> StockItem:
    """Set the units on hand, creating the stock record on first use."""
    created = await repository.get_item(session, product_id) is None and await repository.add_item(
        session, product_id, on_hand
    )
    if not created and not await repository.set_on_hand(session, product_id, on_hand):
        raise StockBelowReserved(
            f"Product {product_id} has more units reserved than {on_hand}; retry when"
            " pending checkouts are done."
        )
    item = await get_item(session, product_id=product_id)
    await record(session, outbox, _changed(product_id, item.on_hand, item.reserved))
    return item


def _merge(lines: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    totals: dict[int, int] = defaultdict(int)
    for product_id, quantity in lines:
        totals[product_id] += quantity
    # A fixed lock order (by product id) keeps concurrent reservations deadlock-free.
    return sorted(totals.items())


async def create_reservation(
    session: AsyncSession, *, reservation_id: uuid.UUID, lines: Iterable[tuple[int, int]]
) -> ReservationStatus:
    """Hold every line or none: :class:`OutOfStock` names what is short.

    Replaying an existing reservation returns its status without holding anything again.
    """
    await repository.lock_reservation(session, reservation_id)
    existing = await repository.get_reservation(session, reservation_id)
    if existing:
        status = ReservationStatus(existing[0].status)
        if status in (ReservationStatus.RELEASED, ReservationStatus.RETURNED):
            raise ReservationClosed(f"Reservation {reservation_id} was already {status.value}.")
        return status
    merged = _merge(lines)
    short = [
        product_id
        for product_id, quantity in merged
        if not await repository.hold(session, product_id, quantity)
    ]
    if short:
        names = ", ".join(str(product_id) for product_id in short)
        raise OutOfStock(f"Not enough stock for product(s) {names}.", product_ids=short)
    await repository.add_reservation_lines(session, reservation_id, merged)
    await _record_levels(session, [product_id for product_id, _ in merged])
    return ReservationStatus.RESERVED


async def _transition(
    session: AsyncSession,
    reservation_id: uuid.UUID,
    *,
    old: ReservationStatus,
    new: ReservationStatus,
    on_hand: int,
    reserved: int,
) -> ReservationStatus | None:
    await repository.lock_reservation(session, reservation_id)
    lines = await repository.get_reservation(session, reservation_id, for_update=True)
    if not lines:
        if new is ReservationStatus.RELEASED:
            # Released before it was ever made (a compensation overtaking a slow or lost
            # reserve call): leave a tombstone so the late reserve holds nothing.
            await repository.add_reservation_lines(session, reservation_id, [(0, 0)])
            await repository.set_reservation_status(
                session, reservation_id, old=ReservationStatus.RESERVED, new=new
            )
            return new
        return None
    if await repository.set_reservation_status(session, reservation_id, old=old, new=new):
        for line in lines:
            await repository.adjust(
                session,
                line.product_id,
                on_hand=on_hand * line.quantity,
                reserved=reserved * line.quantity,
            )
        await _record_levels(session, [line.product_id for line in lines if line.quantity])
        return new
    return ReservationStatus(lines[0].status)


async def commit_reservation(
    session: AsyncSession, *, reservation_id: uuid.UUID
) -> ReservationStatus | None:
    """The reserved units leave the shelf (sold). Idempotent; None if unknown."""
    return await _transition(
        session,
        reservation_id,
        old=ReservationStatus.RESERVED,
        new=ReservationStatus.COMMITTED,
        on_hand=-1,
        reserved=-1,
    )


async def release_reservation(
    session: AsyncSession, *, reservation_id: uuid.UUID
) -> ReservationStatus | None:
    """The reserved units become available again. Idempotent; None if unknown."""
    return await _transition(
        session,
        reservation_id,
        old=ReservationStatus.RESERVED,
        new=ReservationStatus.RELEASED,
        on_hand=0,
        reserved=-1,
    )


async def return_reservation(
    session: AsyncSession, *, reservation_id: uuid.UUID
) -> ReservationStatus | None:
    """Sold units come back on hand (a cancelled order). Idempotent; None if unknown."""
    return await _transition(
        session,
        reservation_id,
        old=ReservationStatus.COMMITTED,
        new=ReservationStatus.RETURNED,
        on_hand=1,
        reserved=0,
    )


async def update_reservation(
    session: AsyncSession, *, reservation_id: uuid.UUID, action: ReservationAction
) -> ReservationStatus | None:
    """Apply ``action`` to the reservation: commit, release or return. Idempotent."""
    step = {
        ReservationAction.COMMIT: commit_reservation,
        ReservationAction.RELEASE: release_reservation,
        ReservationAction.RETURN: return_reservation,
    }[action]
    return await step(session, reservation_id=reservation_id)
