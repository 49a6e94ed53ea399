"""What inventory needs from other contexts, in inventory's terms."""

from __future__ import annotations

from typing import Protocol


class ProductDirectory(Protocol):
    """Whether a product id names a product the shop sells."""

    async def exists(self, product_id: int) -> bool: ...
