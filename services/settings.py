"""Settings shared by every service deployable (plus each context's own prefixes)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr

from shop.cart.settings import CartSettings
from shop.identity.settings import IdentitySettings
from shop.kernel.edge import EdgeSettings
from shop.kernel.settings import RemoteCallSettings
from shop.kernel.topology import DEFAULT_TOPOLOGY
from shop.orders.settings import OrdersSettings
from shop.payments.settings import PaymentsSettings


class ServiceSettings(RemoteCallSettings, EdgeSettings, env_prefix="SERVICE_"):
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "SERVICE_DATABASE_URL"),
        description="This service's own database (default var/services/<service>.db)",
    )
    db_pool_size: int = Field(10, ge=1, le=100)
    internal_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SHOP_INTERNAL_TOKEN", "SERVICE_INTERNAL_TOKEN"),
        description="Shared secret proving a call comes from another service; required",
    )
    edge_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SHOP_EDGE_TOKEN", "SERVICE_EDGE_TOKEN"),
        description="Shared secret proving a request came through the gateway, which then "
        "says the caller's address (X-Shop-Client-Address); unset: not behind a gateway",
    )
    topology: Path = Field(
        DEFAULT_TOPOLOGY, validation_alias=AliasChoices("SHOP_TOPOLOGY", "SERVICE_TOPOLOGY")
    )
    recover_checkouts: bool = True
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    cart: CartSettings = Field(default_factory=CartSettings)
    orders: OrdersSettings = Field(default_factory=OrdersSettings)
    payments: PaymentsSettings = Field(default_factory=PaymentsSettings)
