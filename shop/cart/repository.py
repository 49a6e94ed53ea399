"""Cart's queries."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.cart.models import CartLine, products
from shop.kernel.events import apply_newer

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


async def put_product(
    session: AsyncSession, product_id: int, values: dict[str, object], *, sequence: int
) -> bool:
    """Store what the catalog said of a product (``values``: some columns of
    ``cart_products``) unless a newer event's is stored; True if stored."""
    return await apply_newer(
        session, products, key={"product_id": product_id}, values=values, sequence=sequence
    )


@dataclass(frozen=True)
class KnownProduct:
    """What the read model holds of a product: a name and price unless it was deleted (or
    its deletion is all that arrived)."""

    product_id: int
    deleted: bool
    name: str
    price_amount: int
    currency: str


_PRODUCTS = select(
    products.c.product_id,
    products.c.deleted,
    products.c.name,
    products.c.price_amount,
    products.c.currency,
).where(products.c.product_id.in_(bindparam("product_ids", expanding=True)))


async def list_products(session: AsyncSession, product_ids: Collection[int]) -> list[KnownProduct]:
    """The read model's rows among ``product_ids``, deleted products included."""
    if not product_ids:
        return []
    rows = await session.execute(_PRODUCTS, {"product_ids": list(product_ids)})
    return [
        KnownProduct(
            product_id=row[0],
            deleted=bool(row[1]) or row[2] is None,
            name=row[2] or "",
            price_amount=row[3] or 0,
            currency=row[4] or "",
        )
        for row in rows
    ]
