"""Catalog's queries."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from shop.catalog.models import Category, Product, stock_levels
from shop.catalog.schemas import ProductSort
from shop.kernel.events import apply_newer

_ORDER = {
    ProductSort.ID: (Product.id,),
    ProductSort.NAME: (Product.name, Product.id),
    ProductSort.NAME_DESC: (Product.name.desc(), Product.id),
    ProductSort.PRICE: (Product.price_amount, Product.id),
    ProductSort.PRICE_DESC: (Product.price_amount.desc(), Product.id),
    ProductSort.NEWEST: (Product.id.desc(),),
}


# The hot queries are built once, with bound parameters: building a statement and its cache
# key on every request cost about a tenth of a product view (docs/benchmarks.md).
_ACTIVE = select(Product).where(Product.is_active.is_(True))
_BY_ID = _ACTIVE.where(Product.id == bindparam("product_id"))
_BY_IDS = _ACTIVE.where(Product.id.in_(bindparam("product_ids", expanding=True)))
_CATEGORIES = select(Category).order_by(Category.name, Category.id)
_LIKE_ESCAPE = "/"


@dataclass(frozen=True)
class ProductFilter:
    category_slug: str | None = None
    sku: str | None = None
    text: str | None = None
    min_price: int | None = None
    max_price: int | None = None


async def list_categories(session: AsyncSession) -> Sequence[Category]:
    result = await session.scalars(_CATEGORIES)
    return result.all()


async def get_category(session: AsyncSession, category_id: int) -> Category | None:
    return await session.get(Category, category_id)


async def add(session: AsyncSession, row: Category | Product) -> bool:
    """Insert ``row``; False when a unique constraint (slug, SKU) refused it."""
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        return False
    return True


async def get_product(session: AsyncSession, product_id: int) -> Product | None:
    result = await session.scalars(_BY_ID, {"product_id": product_id})
    return result.one_or_none()


async def get_products(session: AsyncSession, product_ids: Collection[int]) -> Sequence[Product]:
    if not product_ids:
        return []
    result = await session.scalars(_BY_IDS, {"product_ids": list(product_ids)})
    return result.all()


async def list_every_product(
    session: AsyncSession, *, after: int | None, limit: int
) -> Sequence[Product]:
    """Up to ``limit`` products, deleted (archived) ones included, whose id is above
    ``after`` (every product: ``None``), by id."""
    query = select(Product)
    if after is not None:
        query = query.where(Product.id > after)
    return (await session.scalars(query.order_by(Product.id).limit(limit))).all()


@functools.cache
def _listing(
    sort: ProductSort,
    *,
    category: bool,
    sku: bool,
    text: bool,
    low: bool,
    high: bool,
    sqlite: bool,
) -> Select[Product]:
    """The listing query for one combination of filters (at most 2^5 x 6 x 2 of them)."""
    query = _ACTIVE
    if category:
        query = query.join(Category, Category.id == Product.category_id).where(
            Category.slug == bindparam("category_slug")
        )
    if sku:
        query = query.where(Product.sku == bindparam("sku"))
    if text:
        # What icontains(autoescape=True) writes, with the pattern bound, not inlined. On
        # SQLite, LIKE itself ignores case, with the same (ASCII) folding as its lower(), so
        # SQLAlchemy's lower(x) LIKE lower(y) only doubled the cost of the scan (690 vs 340
        # us over the 1,000 seeded products).
        pattern: BindParameter[str] = bindparam("pattern")

        def contains(column: InstrumentedAttribute[str]) -> ColumnElement[bool]:
            if sqlite:
                return column.like(pattern, escape=_LIKE_ESCAPE)
            return column.ilike(pattern, escape=_LIKE_ESCAPE)

        query = query.where(contains(Product.name) | contains(Product.description))
    if low:
        query = query.where(Product.price_amount >= bindparam("min_price"))
    if high:
        query = query.where(Product.price_amount <= bindparam("max_price"))
    return query.order_by(*_ORDER[sort]).limit(bindparam("limit")).offset(bindparam("offset"))


def _contains_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own ``%``, ``_`` and ``/`` escaped."""
    for char in (_LIKE_ESCAPE, "%", "_"):
        text = text.replace(char, _LIKE_ESCAPE + char)
    return f"%{text}%"


async def list_products(
    session: AsyncSession,
    *,
    where: ProductFilter,
    sort: ProductSort,
    limit: int,
    offset: int,
) -> Sequence[Product]:
    query = _listing(
        sort,
        category=where.category_slug is not None,
        sku=where.sku is not None,
        text=bool(where.text),
        low=where.min_price is not None,
        high=where.max_price is not None,
        sqlite=session.get_bind().dialect.name == "sqlite",
    )
    params: dict[str, object] = {"limit": limit, "offset": offset}
    if where.category_slug is not None:
        params["category_slug"] = where.category_slug
    if where.sku is not None:
        params["sku"] = where.sku
    if where.text:
        params["pattern"] = _contains_pattern(where.text)
    if where.min_price is not None:
        params["min_price"] = where.min_price
    if where.max_price is not None:
        params["max_price"] = where.max_price
    return (await session.scalars(query, params)).all()


async def put_stock_level(
    session: AsyncSession,
    product_id: int,
    *,
    on_hand: int,
    reserved: int,
    available: int,
    sequence: int,
) -> bool:
    """Store a product's stock numbers unless a newer event's are stored; True if stored."""
    return await apply_newer(
        session,
        stock_levels,
        key={"product_id": product_id},
        values={"on_hand": on_hand, "reserved": reserved, "available": available},
        sequence=sequence,
    )


_STOCK_AVAILABLE = select(stock_levels.c.product_id, stock_levels.c.available).where(
    stock_levels.c.product_id.in_(bindparam("product_ids", expanding=True))
)


async def stock_available(session: AsyncSession, product_ids: Collection[int]) -> dict[int, int]:
    """Units available per product with a stored stock level (the others are left out)."""
    if not product_ids:
        return {}
    rows = await session.execute(_STOCK_AVAILABLE, {"product_ids": list(product_ids)})
    return {row[0]: row[1] for row in rows}
