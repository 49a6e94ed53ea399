"""Orders' queries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.kernel.db import utcnow
from shop.orders.models import Order, OrderStatus


async def get_order(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    return await session.get(Order, order_id, populate_existing=True)


async def get_by_key(session: AsyncSession, user_id: uuid.UUID, key: str) -> Order | None:
    result = await session.scalars(
        select(Order).where(Order.user_id == user_id, Order.idempotency_key == key)
    )
    return result.one_or_none()


async def add(session: AsyncSession, order: Order) -> bool:
    """Insert ``order`` with its lines; False when its idempotency key was taken meanwhile."""
    try:
        async with session.begin_nested():
            session.add(order)
            await session.flush()
    except IntegrityError:
        return False
    return True


async def list_orders(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, offset: int
) -> Sequence[Order]:
    result = await session.scalars(
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.created_at.desc(), Order.id)
        .limit(limit)
        .offset(offset)
    )
    return result.all()


async def list_pending(session: AsyncSession, *, updated_before: datetime) -> Sequence[uuid.UUID]:
    result = await session.scalars(
        select(Order.id)
        .where(Order.status == OrderStatus.PENDING.value, Order.updated_at < updated_before)
        .order_by(Order.created_at)
    )
    return result.all()


async def set_status(
    session: AsyncSession, order_id: uuid.UUID, *, old: OrderStatus, new: OrderStatus
) -> bool:
    """Move the order from ``old`` to ``new`` status; False if it was not in ``old``."""
    result = await session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status == old.value)
        .values(status=new.value, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
