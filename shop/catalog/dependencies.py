"""Catalog's request dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from shop.catalog.ports import StockLevels
from shop.catalog.settings import CatalogSettings
from shop.kernel.ports import provide
from shop.kernel.types import MAX_INT32


def catalog_settings(request: Request) -> CatalogSettings:
    settings = getattr(request.app.state, "catalog_settings", None)
    if not isinstance(settings, CatalogSettings):
        raise RuntimeError("app.state.catalog_settings is not set")
    return settings


Settings = Annotated[CatalogSettings, Depends(catalog_settings)]
Stock = Annotated[StockLevels, Depends(provide(StockLevels))]
ProductId = Annotated[int, Path(ge=1, le=MAX_INT32, description="A product id")]
