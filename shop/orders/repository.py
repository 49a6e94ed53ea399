"""Orders' queries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.kernel.db import utcnow
from shop.orders.models import Order, OrderStatus, SagaStep


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


async def list_unattended(session: AsyncSession, *, now: datetime) -> Sequence[uuid.UUID]:
    """Orders whose saga nobody runs: pending, or being cancelled, with their lease run out."""
    result = await session.scalars(
        select(Order.id)
        .where(
            or_(
                Order.status == OrderStatus.PENDING.value,
                and_(
                    Order.status == OrderStatus.CONFIRMED.value,
                    Order.saga_step == SagaStep.CANCELLING.value,
                ),
            ),
            or_(Order.lease_expires_at.is_(None), Order.lease_expires_at < now),
        )
        .order_by(Order.created_at)
    )
    return result.all()


async def take_lease(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    owner: str,
    status: OrderStatus,
    until: datetime,
    now: datetime,
    step: SagaStep | None = None,
) -> bool:
    """Hold the order's lease until ``until`` (renewing it if ``owner`` holds it already).

    Granted only while the order is in ``status`` and nobody else holds a live lease, so a
    conditional update decides between racing runners on any database. ``step`` records
    the step done with it.
    """
    values: dict[str, object] = {
        "lease_owner": owner,
        "lease_expires_at": until,
        "updated_at": now,
    }
    if step is not None:
        values["saga_step"] = step.value
    result = await session.execute(
        update(Order)
        .where(
            Order.id == order_id,
            Order.status == status.value,
            or_(
                Order.lease_owner == owner,
                Order.lease_expires_at.is_(None),
                Order.lease_expires_at < now,
            ),
        )
        .values(values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def drop_lease(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    owner: str,
    expired_at: datetime | None = None,
) -> None:
    """Give the lease up at once (the holder leaves the order to whoever comes next).

    ``expired_at``: the expiry to leave behind, a past one (None: none). Recovery, which
    only looked, puts back the lease it took over, so the order still shows when its last
    runner stopped answering for it.
    """
    await session.execute(
        update(Order)
        .where(Order.id == order_id, Order.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=expired_at)
        .execution_options(synchronize_session=False)
    )


async def finish_cancellation(session: AsyncSession, order_id: uuid.UUID) -> bool:
    """Confirmed -> cancelled, the saga finished and the lease dropped; False if not confirmed."""
    result = await session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status == OrderStatus.CONFIRMED.value)
        .values(
            status=OrderStatus.CANCELLED.value,
            saga_step=SagaStep.FINISHED.value,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
