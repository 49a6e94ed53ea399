"""Cart's queries."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.cart.models import CartLine

# Built once: every cart read and write lists the lines.
_LINES = (
    select(CartLine)
    .where(CartLine.user_id == bindparam("user_id"))
    .order_by(CartLine.added_at, CartLine.product_id)
)


async def list_lines(session: AsyncSession, user_id: uuid.UUID) -> Sequence[CartLine]:
    result = await session.scalars(_LINES, {"user_id": user_id})
    return result.all()


async def get_line(session: AsyncSession, user_id: uuid.UUID, product_id: int) -> CartLine | None:
    return await session.get(CartLine, (user_id, product_id))


async def add_line(session: AsyncSession, line: CartLine) -> bool:
    """Insert ``line``; False when a concurrent request inserted the same product first."""
    try:
        async with session.begin_nested():
            session.add(line)
            await session.flush()
    except IntegrityError:
        return False
    return True


async def delete_lines(
    session: AsyncSession, user_id: uuid.UUID, product_ids: Collection[int] | None = None
) -> None:
    query = delete(CartLine).where(CartLine.user_id == user_id)
    if product_ids is not None:
        query = query.where(CartLine.product_id.in_(product_ids))
    await session.execute(query.execution_options(synchronize_session=False))
