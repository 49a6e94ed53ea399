"""The monolith's settings: its database plus each context's own settings.

On its own the monolith serves every context. Run as one service of a kata step's topology
(``SHOP_TOPOLOGY``, set by the launcher) it serves the contexts the topology gives it and
calls the others over HTTP, proving itself with ``SHOP_INTERNAL_TOKEN``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr

from shop.cart.settings import CartSettings
from shop.catalog.settings import CatalogSettings
from shop.identity.settings import IdentitySettings
from shop.inventory.settings import InventorySettings
from shop.kernel.edge import EdgeSettings
from shop.kernel.settings import DEFAULT_DATABASE_URL, RemoteCallSettings
from shop.orders.settings import OrdersSettings
from shop.payments.settings import PaymentsSettings


class MonolithSettings(RemoteCallSettings, EdgeSettings, env_prefix="MONOLITH_"):
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "MONOLITH_DATABASE_URL"),
        description="sqlite+aiosqlite:///path.db (default) or postgresql+asyncpg://...",
    )
    db_pool_size: int = Field(10, ge=1, le=100)
    recover_checkouts: bool = Field(
        True, description="Run the background finisher of interrupted checkouts"
    )
    topology: Path | None = Field(
        None,
        validation_alias=AliasChoices("SHOP_TOPOLOGY", "MONOLITH_TOPOLOGY"),
        description="A kata step's topology: which contexts this monolith still serves",
    )
    service_name: str = Field(
        "monolith", description="This process's service in the topology (kata steps)"
    )
    internal_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SHOP_INTERNAL_TOKEN", "MONOLITH_INTERNAL_TOKEN"),
        description="Shared secret for calls to and from extracted services (kata steps)",
    )
    edge_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SHOP_EDGE_TOKEN", "MONOLITH_EDGE_TOKEN"),
        description="Shared secret proving a request came through the gateway, which then "
        "says the caller's address (X-Shop-Client-Address); unset: not behind a gateway",
    )
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    inventory: InventorySettings = Field(default_factory=InventorySettings)
    cart: CartSettings = Field(default_factory=CartSettings)
    orders: OrdersSettings = Field(default_factory=OrdersSettings)
    payments: PaymentsSettings = Field(default_factory=PaymentsSettings)
