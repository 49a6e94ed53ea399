"""Inventory's queries. Stock changes are conditional updates, never read-then-write."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.inventory.models import ReservationLine, ReservationStatus, StockItem
from shop.kernel.db import serialize


async def get_item(session: AsyncSession, product_id: int) -> StockItem | None:
    return await session.get(StockItem, product_id, populate_existing=True)


# Built once (the product view's query): no statement or cache key built per request.
_AVAILABLE = select(StockItem.product_id, StockItem.on_hand - StockItem.reserved).where(
    StockItem.product_id.in_(bindparam("product_ids", expanding=True))
)


async def available(session: AsyncSession, product_ids: Collection[int]) -> dict[int, int]:
    if not product_ids:
        return {}
    rows = await session.execute(_AVAILABLE, {"product_ids": list(product_ids)})
    return {row[0]: row[1] for row in rows}


async def get_levels(
    session: AsyncSession, product_ids: Collection[int]
) -> Sequence[tuple[int, int, int]]:
    """``(product_id, on_hand, reserved)`` of the products' stock rows, as this transaction
    sees them (its own changes included), by product id."""
    if not product_ids:
        return []
    rows = await session.execute(
        select(StockItem.product_id, StockItem.on_hand, StockItem.reserved)
        .where(StockItem.product_id.in_(list(product_ids)))
        .order_by(StockItem.product_id)
    )
    return [(row[0], row[1], row[2]) for row in rows]


async def list_levels(
    session: AsyncSession, *, after: int | None, limit: int
) -> Sequence[tuple[int, int, int]]:
    """``(product_id, on_hand, reserved)`` of up to ``limit`` stock rows whose product id
    is above ``after`` (every row: ``None``), by product id."""
    query = select(StockItem.product_id, StockItem.on_hand, StockItem.reserved)
    if after is not None:
        query = query.where(StockItem.product_id > after)
    rows = await session.execute(query.order_by(StockItem.product_id).limit(limit))
    return [(row[0], row[1], row[2]) for row in rows]


async def set_on_hand(session: AsyncSession, product_id: int, on_hand: int) -> bool:
    """Set the units on hand unless that would drop below the reserved units."""
    result = await session.execute(
        update(StockItem)
        .where(StockItem.product_id == product_id, StockItem.reserved <= on_hand)
        .values(on_hand=on_hand)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_item(session: AsyncSession, product_id: int, on_hand: int) -> bool:
    """Insert a stock row; False when a concurrent request created it first."""
    try:
        async with session.begin_nested():
            session.add(StockItem(product_id=product_id, on_hand=on_hand, reserved=0))
            await session.flush()
    except IntegrityError:
        return False
    return True


async def hold(session: AsyncSession, product_id: int, quantity: int) -> bool:
    """Reserve ``quantity`` units if that many are available, atomically."""
    result = await session.execute(
        update(StockItem)
        .where(
            StockItem.product_id == product_id,
            StockItem.on_hand - StockItem.reserved >= quantity,
        )
        .values(reserved=StockItem.reserved + quantity)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def adjust(session: AsyncSession, product_id: int, *, on_hand: int, reserved: int) -> None:
    """Add the (signed) deltas to a stock row."""
    await session.execute(
        update(StockItem)
        .where(StockItem.product_id == product_id)
        .values(on_hand=StockItem.on_hand + on_hand, reserved=StockItem.reserved + reserved)
        .execution_options(synchronize_session=False)
    )


async def lock_reservation(session: AsyncSession, reservation_id: uuid.UUID) -> None:
    """Serialize every change of one reservation until the transaction ends.

    A reserve and its release may run at once (the saga's compensation overtaking a slow
    reserve); under READ COMMITTED neither would see the other's uncommitted rows.
    """
    await serialize(session, f"inventory-reservation:{reservation_id}")


async def get_reservation(
    session: AsyncSession, reservation_id: uuid.UUID, *, for_update: bool = False
) -> Sequence[ReservationLine]:
    query = (
        select(ReservationLine)
        .where(ReservationLine.reservation_id == reservation_id)
        .order_by(ReservationLine.product_id)
    )
    if for_update:
        query = query.with_for_update()
    return (await session.scalars(query)).all()


async def add_reservation_lines(
    session: AsyncSession, reservation_id: uuid.UUID, lines: Sequence[tuple[int, int]]
) -> None:
    session.add_all(
        ReservationLine(
            reservation_id=reservation_id,
            product_id=product_id,
            quantity=quantity,
            status=ReservationStatus.RESERVED.value,
        )
        for product_id, quantity in lines
    )
    await session.flush()


async def set_reservation_status(
    session: AsyncSession,
    reservation_id: uuid.UUID,
    *,
    old: ReservationStatus,
    new: ReservationStatus,
) -> int:
    """Move the reservation's lines from ``old`` to ``new``; the number of lines moved."""
    result = await session.execute(
        update(ReservationLine)
        .where(ReservationLine.reservation_id == reservation_id, ReservationLine.status == old)
        .values(status=new.value)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
