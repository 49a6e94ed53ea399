"""Settings base: every context and deployable reads its own env prefix through this."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/shop.db"


class ShopSettings(BaseSettings):
    """Base for settings classes: environment variables and an optional ``.env`` file."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )
