"""Cart's endpoints: always the caller's own cart."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Response, status

from shop.cart import service
from shop.cart.dependencies import Catalog, ProductId, Settings
from shop.cart.schemas import CartItemUpdate, CartLineRead, CartLinesRemove, CartRead
from shop.kernel.db import Db, Session
from shop.kernel.errors import problems
from shop.kernel.security import CurrentUser, internal_caller

router = APIRouter(tags=["cart"])


@router.get("/cart", response_model=CartRead, responses=problems(401))
async def get_cart(principal: CurrentUser, db: Db, catalog: Catalog) -> CartRead:
    """The caller's cart, priced now."""
    return await service.get_cart(db, user_id=principal.user_id, catalog=catalog)


@router.put(
    "/cart/items/{product_id}",
    response_model=CartRead,
    responses=problems(401, 404, 409, 422),
)
async def put_item(
    product_id: ProductId,
    body: CartItemUpdate,
    principal: CurrentUser,
    db: Db,
    catalog: Catalog,
    settings: Settings,
) -> CartRead:
    """Set how many units of a product the cart holds."""
    return await service.update_item(
        db,
        user_id=principal.user_id,
        product_id=product_id,
        quantity=body.quantity,
        catalog=catalog,
        max_lines=settings.max_lines,
    )


@router.delete("/cart/items/{product_id}", response_model=CartRead, responses=problems(401, 422))
async def delete_item(
    product_id: ProductId,
    principal: CurrentUser,
    db: Db,
    catalog: Catalog,
) -> CartRead:
    """Take a product out of the cart (no-op if absent)."""
    return await service.delete_item(
        db, user_id=principal.user_id, product_id=product_id, catalog=catalog
    )


@router.delete(
    "/cart",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401),
)
async def clear_cart(principal: CurrentUser, session: Session) -> None:
    """Empty the cart."""
    await service.delete_items(session, user_id=principal.user_id)


internal_router = APIRouter(
    prefix="/internal/cart",
    tags=["internal"],
    include_in_schema=False,
    dependencies=[Depends(internal_caller)],
)


@internal_router.get("/{user_id}/lines", response_model=list[CartLineRead])
async def internal_lines(user_id: uuid.UUID, session: Session) -> Any:
    """The user's raw lines (product and quantity), for checkout."""
    return await service.list_lines(session, user_id=user_id)


@internal_router.post(
    "/{user_id}/remove", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def internal_remove(user_id: uuid.UUID, body: CartLinesRemove, session: Session) -> None:
    """Take ordered products out of the user's cart (idempotent)."""
    await service.delete_items(session, user_id=user_id, product_ids=body.product_ids)
