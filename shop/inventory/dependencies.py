"""Inventory's request dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from shop.inventory.ports import ProductDirectory
from shop.kernel.ports import provide

Products = Annotated[ProductDirectory, Depends(provide(ProductDirectory))]
