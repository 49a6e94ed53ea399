"""What every deployable reads, whatever it serves: its database, its peers, its secrets.

The monolith (``MONOLITH_*``) and a service (``SERVICE_*``) differ only in their prefix and
defaults. Each served context reads its own settings class from the environment
(``ORDERS_*``, ``PAYMENTS_*``...) through :attr:`DeployableSettings.contexts`; tests hand
instances in with :meth:`DeployableSettings.with_contexts`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings

from shop.kernel.context import SettingsSource
from shop.kernel.edge import EdgeSettings
from shop.kernel.settings import RemoteCallSettings


def _names(name: str) -> AliasChoices:
    """``SHOP_<NAME>``, then the deployable's own prefixes."""
    return AliasChoices(f"SHOP_{name}", f"MONOLITH_{name}", f"SERVICE_{name}")


class DeployableSettings(RemoteCallSettings, EdgeSettings):
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "DATABASE_URL", "MONOLITH_DATABASE_URL", "SERVICE_DATABASE_URL"
        ),
        description="sqlite+aiosqlite:///path.db or postgresql+asyncpg://...",
    )
    db_pool_size: int = Field(10, ge=1, le=100)
    recover_checkouts: bool = Field(
        True, description="Run the background finisher of interrupted checkouts"
    )
    topology: Path | None = Field(
        None,
        validation_alias=_names("TOPOLOGY"),
        description="Which contexts run where (topologies/*.toml)",
    )
    service_name: str | None = Field(
        None,
        validation_alias=AliasChoices("SHOP_SERVICE"),
        description="This process's service in the topology",
    )
    internal_token: SecretStr | None = Field(
        None,
        validation_alias=_names("INTERNAL_TOKEN"),
        description="Shared secret proving a call comes from another process of the shop; "
        "required as soon as some context is served elsewhere",
    )
    edge_token: SecretStr | None = Field(
        None,
        validation_alias=_names("EDGE_TOKEN"),
        description="Shared secret proving a request came through the gateway, which then "
        "says the caller's address (X-Shop-Client-Address); unset: not behind a gateway",
    )
    broker_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        validation_alias=_names("BROKER_URL"),
        description="The RabbitMQ broker, when the topology's bus is rabbitmq",
    )
    bus_prefix: str = Field(
        "shop",
        validation_alias=_names("BUS_PREFIX"),
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$",
        description="The first part of every exchange and queue name on the broker"
        " (<prefix>.<context>): deployments sharing a broker keep apart with their own",
    )
    _contexts: SettingsSource = PrivateAttr(default_factory=SettingsSource)

    @field_validator("bus_prefix")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if f"{value}.".startswith("amq."):
            raise ValueError("RabbitMQ reserves the names that begin with 'amq.'")
        return value

    @property
    def contexts(self) -> SettingsSource:
        """Each context's settings: ``settings.contexts(OrdersSettings)``."""
        return self._contexts

    def with_contexts(self, *given: BaseSettings) -> Self:
        """The same settings with these context settings instead of the environment's."""
        copy = self.model_copy()
        copy._contexts = self._contexts.with_given(*given)
        return copy
