"""Settings base: every context and deployable reads its own env prefix through this."""

from __future__ import annotations

import ipaddress

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/shop.db"


def is_loopback(host: str) -> bool:
    """Whether a server listening on ``host`` can be reached from this machine only.

    ``0.0.0.0``, ``::`` and an empty host listen on every interface; a name other than
    ``localhost`` may resolve anywhere, so it counts as reachable.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ShopSettings(BaseSettings):
    """Base for settings classes: environment variables and an optional ``.env`` file."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )


class RemoteCallSettings(ShopSettings):
    """How a deployable calls the contexts it does not serve itself (over HTTP).

    Mixed into every deployable's settings, each under its own prefix
    (``SERVICE_READ_TIMEOUT_SECONDS``, ``MONOLITH_READ_TIMEOUT_SECONDS``).
    """

    connect_timeout_seconds: float = Field(1.0, gt=0)
    read_timeout_seconds: float = Field(5.0, gt=0)
    budget_seconds: float = Field(8.0, gt=0, description="One upstream call, retries included")
    retries: int = Field(2, ge=0, le=5)
    breaker_threshold: int = Field(5, ge=1)
    breaker_reset_seconds: float = Field(2.0, gt=0)
