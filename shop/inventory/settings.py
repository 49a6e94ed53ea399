"""Inventory settings (``INVENTORY_*``)."""

from __future__ import annotations

from shop.kernel.settings import ShopSettings


class InventorySettings(ShopSettings, env_prefix="INVENTORY_"):
    """Nothing to tune yet; the class keeps the settings vocabulary uniform."""
