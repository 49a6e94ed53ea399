"""Cart's request dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from shop.cart.ports import ProductCatalog
from shop.cart.settings import CartSettings
from shop.kernel.ports import provide
from shop.kernel.types import MAX_INT32


async def cart_settings(request: Request) -> CartSettings:
    settings = getattr(request.app.state, "cart_settings", None)
    if not isinstance(settings, CartSettings):
        raise RuntimeError("app.state.cart_settings is not set")
    return settings


Settings = Annotated[CartSettings, Depends(cart_settings)]
Catalog = Annotated[ProductCatalog, Depends(provide(ProductCatalog))]
ProductId = Annotated[int, Path(ge=1, le=MAX_INT32, description="A product id")]
