"""Catalog's endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from shop.catalog import service
from shop.catalog.dependencies import ProductId, Stock
from shop.catalog.repository import ProductFilter
from shop.catalog.schemas import (
    CatalogEntry,
    CategoryCreate,
    CategoryRead,
    PriceBound,
    ProductCreate,
    ProductDetail,
    ProductRead,
    ProductSort,
    ProductUpdate,
    Sku,
)
from shop.kernel.db import Db, Session
from shop.kernel.errors import problems
from shop.kernel.pagination import Page, Paging
from shop.kernel.security import AdminUser, internal_caller
from shop.kernel.types import SearchText, Slug

router = APIRouter(tags=["catalog"])


@router.get("/categories", response_model=list[CategoryRead])
async def list_categories(session: Session) -> Any:
    """Every category, by name."""
    return await service.list_categories(session)


@router.post(
    "/categories",
    status_code=status.HTTP_201_CREATED,
    response_model=CategoryRead,
    responses=problems(401, 403, 409, 422),
)
async def create_category(body: CategoryCreate, session: Session, _: AdminUser) -> Any:
    """Create a category (admin)."""
    return await service.create_category(session, data=body)


@router.get("/products", response_model=Page[ProductRead], responses=problems(422))
async def list_products(
    session: Session,
    paging: Paging,
    category: Annotated[Slug | None, Query(description="A category slug")] = None,
    sku: Annotated[Sku | None, Query(description="Exactly this SKU")] = None,
    q: Annotated[SearchText | None, Query(description="Text in name or description")] = None,
    min_price: Annotated[PriceBound | None, Query(description="Minor units, inclusive")] = None,
    max_price: Annotated[PriceBound | None, Query(description="Minor units, inclusive")] = None,
    sort: ProductSort = ProductSort.ID,
) -> Any:
    """Browse and search the catalog, one page at a time."""
    where = ProductFilter(
        category_slug=category, sku=sku, text=q, min_price=min_price, max_price=max_price
    )
    rows = await service.list_products(
        session, where=where, sort=sort, limit=paging.fetch, offset=paging.offset
    )
    return paging.page(rows)


@router.get("/products/{product_id}", response_model=ProductDetail, responses=problems(404, 422))
async def get_product(product_id: ProductId, db: Db, stock: Stock) -> Any:
    """One product, with the units available now."""
    return await service.get_product_view(db, product_id=product_id, stock=stock)


@router.post(
    "/products",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductRead,
    responses=problems(401, 403, 404, 409, 422),
)
async def create_product(body: ProductCreate, session: Session, _: AdminUser) -> Any:
    """Add a product (admin)."""
    return await service.create_product(session, data=body)


@router.patch(
    "/products/{product_id}",
    response_model=ProductRead,
    responses=problems(401, 403, 404, 422),
)
async def update_product(
    product_id: ProductId, body: ProductUpdate, session: Session, _: AdminUser
) -> Any:
    """Change a product's name, description, category or price (admin)."""
    return await service.update_product(session, product_id=product_id, data=body)


@router.delete(
    "/products/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 403, 404, 422),
)
async def delete_product(product_id: ProductId, session: Session, _: AdminUser) -> None:
    """Remove a product from the catalog (admin)."""
    await service.delete_product(session, product_id=product_id)


internal_router = APIRouter(
    prefix="/internal/catalog",
    tags=["internal"],
    include_in_schema=False,
    dependencies=[Depends(internal_caller)],
)


@internal_router.get("/products", response_model=list[CatalogEntry])
async def internal_products(
    session: Session, ids: Annotated[list[int], Query(max_length=1000)]
) -> list[CatalogEntry]:
    """Names and current prices of the products still sold among ``ids`` (for other services)."""
    return await service.list_catalog_entries(session, product_ids=ids)
