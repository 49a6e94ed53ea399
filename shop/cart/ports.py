"""What the cart needs from other contexts, in the cart's terms."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from shop.kernel.types import Money


@dataclass(frozen=True)
class CatalogEntry:
    product_id: int
    name: str
    price: Money


class ProductCatalog(Protocol):
    """Current names and prices of products the shop still sells."""

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        """The entries found; unknown or deleted products are left out."""
        ...
