"""A service's settings (``SERVICE_*``): which service of the topology it is, its database."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from composition.settings import DeployableSettings
from shop.kernel.topology import DEFAULT_TOPOLOGY


class ServiceSettings(DeployableSettings, env_prefix="SERVICE_"):
    topology: Path = Field(
        DEFAULT_TOPOLOGY, validation_alias=AliasChoices("SHOP_TOPOLOGY", "SERVICE_TOPOLOGY")
    )

    def database_for(self, service: str) -> str:
        """This service's own database (default var/services/<service>.db)."""
        return self.database_url or f"sqlite+aiosqlite:///var/services/{service}.db"
