"""Inventory's endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from shop.inventory import service
from shop.inventory.dependencies import Products
from shop.inventory.exceptions import ProductNotFound
from shop.inventory.schemas import StockItemRead, StockUpdate
from shop.kernel.db import Session
from shop.kernel.errors import problems
from shop.kernel.security import AdminUser
from shop.kernel.types import MAX_INT32

router = APIRouter(tags=["inventory"])

ProductId = Annotated[int, Path(ge=1, le=MAX_INT32, description="A product id")]


@router.get("/inventory/{product_id}", response_model=StockItemRead, responses=problems(404, 422))
async def get_item(product_id: ProductId, session: Session) -> Any:
    """Stock of one product: on hand, reserved by checkouts in progress, available."""
    return await service.get_item(session, product_id=product_id)


@router.put(
    "/inventory/{product_id}",
    response_model=StockItemRead,
    responses=problems(401, 403, 404, 409, 422),
)
async def update_item(
    product_id: ProductId, body: StockUpdate, session: Session, products: Products, _: AdminUser
) -> Any:
    """Set the units on hand of a product (admin)."""
    if not await products.exists(product_id):
        raise ProductNotFound(f"There is no product {product_id}.")
    return await service.update_item(session, product_id=product_id, on_hand=body.on_hand)
