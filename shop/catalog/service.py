"""Catalog's rules.

Adding, changing and deleting a product record :mod:`shop.catalog.events` in the same
transaction, read back from the row as it stands after the change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from shop.catalog import repository
from shop.catalog.events import ProductChanged, ProductDeleted
from shop.catalog.exceptions import (
    CategoryExists,
    CategoryNotFound,
    ProductNotFound,
    SkuExists,
)
from shop.catalog.models import Category, Product, outbox
from shop.catalog.ports import StockLevels
from shop.catalog.repository import ProductFilter
from shop.catalog.schemas import (
    CatalogEntry,
    CategoryCreate,
    ProductCreate,
    ProductDetail,
    ProductRead,
    ProductSort,
    ProductUpdate,
)
from shop.kernel.db import Database
from shop.kernel.events import Event, record

SNAPSHOT_BATCH = 500
"""Products :func:`snapshot` reads per query."""


async def list_categories(session: AsyncSession) -> Sequence[Category]:
    return await repository.list_categories(session)


async def create_category(session: AsyncSession, *, data: CategoryCreate) -> Category:
    category = Category(slug=data.slug, name=data.name)
    if not await repository.add(session, category):
        raise CategoryExists(f"A category with slug {data.slug!r} already exists.")
    return category


async def list_products(
    session: AsyncSession, *, where: ProductFilter, sort: ProductSort, limit: int, offset: int
) -> Sequence[Product]:
    return await repository.list_products(
        session, where=where, sort=sort, limit=limit, offset=offset
    )


async def get_product(session: AsyncSession, *, product_id: int) -> Product:
    product = await repository.get_product(session, product_id)
    if product is None:
        raise ProductNotFound(f"There is no product {product_id}.")
    return product


async def get_product_view(db: Database, *, product_id: int, stock: StockLevels) -> ProductDetail:
    """One product with the units available now (inventory's, through the port).

    The product is read in a session of its own, closed before inventory is asked: no
    connection or transaction is held while another context answers.
    """
    async with db.reader() as session:
        product = await get_product(session, product_id=product_id)
        # Validated once, from the row; then the count added without validating it all again.
        read = ProductRead.model_validate(product)
    available = await stock.available([read.id])
    return ProductDetail.model_construct(**dict(read), available=available.get(read.id, 0))


async def get_products(session: AsyncSession, *, product_ids: Sequence[int]) -> list[Product]:
    """The active products among ``product_ids`` (unknown or deleted ids are left out)."""
    return list(await repository.get_products(session, set(product_ids)))


async def list_catalog_entries(
    session: AsyncSession, *, product_ids: Sequence[int]
) -> list[CatalogEntry]:
    """Names and current prices of the products still sold among ``product_ids``."""
    products = await get_products(session, product_ids=product_ids)
    return [CatalogEntry(product_id=p.id, name=p.name, price=p.price) for p in products]


def _product_event(product: Product) -> tuple[str, Event]:
    """What became of ``product``: its current state, or its deletion (a concurrent delete
    may have archived it under a change)."""
    if not product.is_active:
        return str(product.id), ProductDeleted(product_id=product.id)
    return str(product.id), ProductChanged(
        product_id=product.id,
        sku=product.sku,
        name=product.name,
        category_id=product.category_id,
        price_amount=product.price_amount,
        currency=product.currency,
    )


async def snapshot(session: AsyncSession) -> AsyncIterator[tuple[str, Event]]:
    """Every product as the event a consumer would have received last about it (catalog's
    ``Context.snapshot``): ``ProductChanged`` for one on sale, ``ProductDeleted`` for one
    archived; by id, all read in the session's transaction."""
    after: int | None = None
    while True:
        products = await repository.list_every_product(session, after=after, limit=SNAPSHOT_BATCH)
        for product in products:
            yield _product_event(product)
        if len(products) < SNAPSHOT_BATCH:
            return
        after = products[-1].id


async def _check_category(session: AsyncSession, category_id: int) -> None:
    if await repository.get_category(session, category_id) is None:
        raise CategoryNotFound(f"There is no category {category_id}.")


async def create_product(session: AsyncSession, *, data: ProductCreate) -> Product:
    await _check_category(session, data.category_id)
    product = Product(
        sku=data.sku,
        name=data.name,
        description=data.description,
        category_id=data.category_id,
        price_amount=data.price.amount,
        currency=data.price.currency,
    )
    if not await repository.add(session, product):
        raise SkuExists(f"A product with SKU {data.sku!r} already exists.")
    await session.refresh(product)
    await record(session, outbox, _product_event(product))
    return product


async def update_product(session: AsyncSession, *, product_id: int, data: ProductUpdate) -> Product:
    product = await get_product(session, product_id=product_id)
    changes = data.model_dump(exclude_none=True, exclude={"price"})
    if data.category_id is not None:
        await _check_category(session, data.category_id)
    if data.price is not None:
        product.price_amount = data.price.amount
    for field, value in changes.items():
        setattr(product, field, value)
    # An update that changes nothing writes (and locks) nothing: it records nothing either,
    # or its event could carry a state older than a concurrent change's.
    changed = session.is_modified(product)
    await session.flush()
    await session.refresh(product)
    if changed:
        await record(session, outbox, _product_event(product))
    return product


async def delete_product(session: AsyncSession, *, product_id: int) -> None:
    """Archive the product: it leaves the catalog, carts and checkout; orders keep it.

    Its SKU stays taken, so an SKU always names one product in the order history.
    """
    product = await get_product(session, product_id=product_id)
    product.is_active = False
    await session.flush()
    await record(session, outbox, _product_event(product))
