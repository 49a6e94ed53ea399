"""The monolith's settings (``MONOLITH_*``): every context on one database by default.

On its own the monolith serves every context. Run as one service of a kata step's topology
(``SHOP_TOPOLOGY``, set by the launcher) it serves the contexts the topology gives it and
calls the others over HTTP, proving itself with ``SHOP_INTERNAL_TOKEN``.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field

from composition.settings import DeployableSettings
from shop.kernel.settings import DEFAULT_DATABASE_URL


class MonolithSettings(DeployableSettings, env_prefix="MONOLITH_"):
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "MONOLITH_DATABASE_URL"),
        description="sqlite+aiosqlite:///path.db (default) or postgresql+asyncpg://...",
    )
    service_name: str = Field(
        "monolith",
        validation_alias=AliasChoices("MONOLITH_SERVICE_NAME"),
        description="This process's service in the topology (kata steps)",
    )
