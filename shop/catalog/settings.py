"""Catalog settings (``CATALOG_*``)."""

from __future__ import annotations

from shop.kernel.settings import ShopSettings


class CatalogSettings(ShopSettings, env_prefix="CATALOG_"):
    """Nothing to tune yet; the class keeps the settings vocabulary uniform."""
