"""Cart settings (``CART_*``)."""

from __future__ import annotations

from pydantic import Field

from shop.kernel.settings import ShopSettings


class CartSettings(ShopSettings, env_prefix="CART_"):
    max_lines: int = Field(100, ge=1, description="Distinct products one cart may hold")
