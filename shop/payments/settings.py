"""Payments settings (``PAYMENTS_*``)."""

from __future__ import annotations

from pydantic import Field

from shop.kernel.settings import ShopSettings


class PaymentsSettings(ShopSettings, env_prefix="PAYMENTS_"):
    processor_delay_seconds: float = Field(
        2.0, ge=0, le=60, description="How long a card ending 0119 waits before timing out"
    )
