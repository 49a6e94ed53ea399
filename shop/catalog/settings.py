"""Catalog settings (``CATALOG_*``)."""

from __future__ import annotations

from pydantic import Field

from shop.kernel.settings import ShopSettings


class CatalogSettings(ShopSettings, env_prefix="CATALOG_"):
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$", description="The shop's one currency")
