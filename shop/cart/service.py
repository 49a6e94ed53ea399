"""Cart's rules."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from shop.cart import repository
from shop.cart.exceptions import CartFull, ProductNotFound
from shop.cart.models import CartLine
from shop.cart.ports import CatalogEntry, ProductCatalog
from shop.cart.schemas import CartItemRead, CartRead
from shop.kernel.db import Database, serialize
from shop.kernel.types import SHOP_CURRENCY, Money


async def list_lines(session: AsyncSession, *, user_id: uuid.UUID) -> Sequence[CartLine]:
    return await repository.list_lines(session, user_id)


async def price(lines: Sequence[CartLine], catalog: ProductCatalog) -> CartRead:
    """``lines`` priced with the catalog's current entries; lines of products no longer sold
    are left out."""
    entries = await catalog.entries([line.product_id for line in lines])
    items = []
    for line in lines:
        entry = entries.get(line.product_id)
        if entry is None:
            continue
        items.append(
            CartItemRead(
                product_id=line.product_id,
                name=entry.name,
                unit_price=entry.price,
                quantity=line.quantity,
                line_total=Money(
                    amount=entry.price.amount * line.quantity, currency=entry.price.currency
                ),
            )
        )
    total = sum(item.line_total.amount for item in items)
    return CartRead(
        items=items,
        total=Money(amount=total, currency=SHOP_CURRENCY),
        item_count=sum(item.quantity for item in items),
    )


class CatalogSnapshot:
    """A :class:`ProductCatalog` that asks the real one about each product once and keeps the
    answer, "no longer sold" included: one request's view of the catalog.

    A cart write asks it before opening its write transaction. On SQLite a write
    transaction holds the database's single write lock, so a call to another service inside
    it would make every other cart write wait for that call (under load, past the gateway's
    timeout); with the answers already here, the transaction asks again only about products
    it did not see before, which only a concurrent write to the same cart can add.
    """

    def __init__(self, catalog: ProductCatalog) -> None:
        self._catalog = catalog
        self._answers: dict[int, CatalogEntry | None] = {}

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        unseen = sorted({p for p in product_ids if p not in self._answers})
        if unseen:
            found = await self._catalog.entries(unseen)
            self._answers.update({p: found.get(p) for p in unseen})
        return {p: entry for p in product_ids if (entry := self._answers[p]) is not None}


async def update_line(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    product_id: int,
    quantity: int,
    catalog: ProductCatalog,
    max_lines: int,
) -> None:
    """Set the quantity of one product in the cart (adding the line if needed), inside the
    caller's write transaction; ``catalog`` is best a :class:`CatalogSnapshot` that was
    asked before the transaction began."""
    # Concurrent adds to one cart take turns, so none can slip past the line limit.
    await serialize(session, f"cart:{user_id}")
    lines = await repository.list_lines(session, user_id)
    known = await catalog.entries({product_id, *(line.product_id for line in lines)})
    if product_id not in known:
        raise ProductNotFound(f"There is no product {product_id}.")
    # Lines of products no longer sold are invisible; drop them rather than count them.
    gone = [line.product_id for line in lines if line.product_id not in known]
    if gone:
        await repository.delete_lines(session, user_id, gone)
    line = next((line for line in lines if line.product_id == product_id), None)
    if line is None:
        if len(lines) - len(gone) >= max_lines:
            raise CartFull(f"A cart holds at most {max_lines} different products.")
        new = CartLine(user_id=user_id, product_id=product_id, quantity=quantity)
        if await repository.add_line(session, new):
            return
        line = await repository.get_line(session, user_id, product_id)
        assert line is not None
    line.quantity = quantity
    await session.flush()


async def delete_items(
    session: AsyncSession, *, user_id: uuid.UUID, product_ids: Collection[int] | None = None
) -> None:
    """Remove the given products from the cart, or every line when none are given."""
    await repository.delete_lines(session, user_id, product_ids)


async def get_cart(db: Database, *, user_id: uuid.UUID, catalog: ProductCatalog) -> CartRead:
    """The cart priced now; lines of products no longer sold are left out.

    The lines are read in a session of their own, closed before the catalog is asked.
    """
    async with db.reader() as session:
        lines = await repository.list_lines(session, user_id)
    return await price(lines, catalog)


async def update_item(
    db: Database,
    *,
    user_id: uuid.UUID,
    product_id: int,
    quantity: int,
    catalog: ProductCatalog,
    max_lines: int,
) -> CartRead:
    """Set how many units of a product the cart holds; the cart priced afterwards.

    The catalog is asked before the write transaction and after it, never inside it
    (:class:`CatalogSnapshot`).
    """
    snapshot = CatalogSnapshot(catalog)
    async with db.reader() as session:
        before = await repository.list_lines(session, user_id)
    await snapshot.entries({product_id, *(line.product_id for line in before)})
    async with db.writer() as session, session.begin():
        await update_line(
            session,
            user_id=user_id,
            product_id=product_id,
            quantity=quantity,
            catalog=snapshot,
            max_lines=max_lines,
        )
        lines = await repository.list_lines(session, user_id)
    return await price(lines, snapshot)


async def delete_item(
    db: Database, *, user_id: uuid.UUID, product_id: int, catalog: ProductCatalog
) -> CartRead:
    """Take a product out of the cart (no-op if absent); the cart priced afterwards."""
    async with db.writer() as session, session.begin():
        await repository.delete_lines(session, user_id, [product_id])
        lines = await repository.list_lines(session, user_id)
    # Priced after the commit: no call to the catalog while the write lock is held.
    return await price(lines, catalog)
