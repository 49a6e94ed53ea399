"""What catalog needs from other contexts, in catalog's terms."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class StockLevels(Protocol):
    """How many units of each product can be ordered now (inventory's ``available``)."""

    async def available(self, product_ids: Collection[int]) -> dict[int, int]:
        """Available units per product id; ids without stock records map to 0."""
        ...
