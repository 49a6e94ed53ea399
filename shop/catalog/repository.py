"""Catalog's queries."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.catalog.models import Category, Product
from shop.catalog.schemas import ProductSort

_ORDER = {
    ProductSort.ID: (Product.id,),
    ProductSort.NAME: (Product.name, Product.id),
    ProductSort.NAME_DESC: (Product.name.desc(), Product.id),
    ProductSort.PRICE: (Product.price_amount, Product.id),
    ProductSort.PRICE_DESC: (Product.price_amount.desc(), Product.id),
    ProductSort.NEWEST: (Product.id.desc(),),
}


@dataclass(frozen=True)
class ProductFilter:
    category_slug: str | None = None
    sku: str | None = None
    text: str | None = None
    min_price: int | None = None
    max_price: int | None = None


async def list_categories(session: AsyncSession) -> Sequence[Category]:
    result = await session.scalars(select(Category).order_by(Category.name, Category.id))
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


def _active_products() -> Select[Product]:
    return select(Product).where(Product.is_active.is_(True))


async def get_product(session: AsyncSession, product_id: int) -> Product | None:
    result = await session.scalars(_active_products().where(Product.id == product_id))
    return result.one_or_none()


async def get_products(session: AsyncSession, product_ids: Collection[int]) -> Sequence[Product]:
    if not product_ids:
        return []
    result = await session.scalars(_active_products().where(Product.id.in_(product_ids)))
    return result.all()


async def list_products(
    session: AsyncSession,
    *,
    where: ProductFilter,
    sort: ProductSort,
    limit: int,
    offset: int,
) -> Sequence[Product]:
    query = _active_products()
    if where.category_slug is not None:
        query = query.join(Category, Category.id == Product.category_id).where(
            Category.slug == where.category_slug
        )
    if where.sku is not None:
        query = query.where(Product.sku == where.sku)
    if where.text:
        query = query.where(
            Product.name.icontains(where.text, autoescape=True)
            | Product.description.icontains(where.text, autoescape=True)
        )
    if where.min_price is not None:
        query = query.where(Product.price_amount >= where.min_price)
    if where.max_price is not None:
        query = query.where(Product.price_amount <= where.max_price)
    query = query.order_by(*_ORDER[sort]).limit(limit).offset(offset)
    return (await session.scalars(query)).all()
