"""Catalog's request dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from shop.catalog.ports import StockLevels
from shop.kernel.ports import provide
from shop.kernel.types import MAX_INT32

Stock = Annotated[StockLevels, Depends(provide(StockLevels))]
ProductId = Annotated[int, Path(ge=1, le=MAX_INT32, description="A product id")]
