"""The monolith's settings: its database plus each context's own settings."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from shop.cart.settings import CartSettings
from shop.catalog.settings import CatalogSettings
from shop.identity.settings import IdentitySettings
from shop.inventory.settings import InventorySettings
from shop.kernel.settings import DEFAULT_DATABASE_URL, ShopSettings
from shop.orders.settings import OrdersSettings
from shop.payments.settings import PaymentsSettings


class MonolithSettings(ShopSettings, env_prefix="MONOLITH_"):
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "MONOLITH_DATABASE_URL"),
        description="sqlite+aiosqlite:///path.db (default) or postgresql+asyncpg://...",
    )
    db_pool_size: int = Field(10, ge=1, le=100)
    recover_checkouts: bool = Field(
        True, description="Run the background finisher of interrupted checkouts"
    )
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    inventory: InventorySettings = Field(default_factory=InventorySettings)
    cart: CartSettings = Field(default_factory=CartSettings)
    orders: OrdersSettings = Field(default_factory=OrdersSettings)
    payments: PaymentsSettings = Field(default_factory=PaymentsSettings)
