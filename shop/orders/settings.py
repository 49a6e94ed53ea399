"""Orders settings (``ORDERS_*``)."""

from __future__ import annotations

from pydantic import Field

from shop.kernel.settings import ShopSettings


class OrdersSettings(ShopSettings, env_prefix="ORDERS_"):
    recovery_interval_seconds: float = Field(
        30.0, gt=0, description="How often interrupted checkouts are looked for"
    )
    recovery_grace_seconds: float = Field(
        120.0,
        ge=1,
        description="The lease of whoever runs a checkout or a cancellation: one that records"
        " no step for this long is taken as interrupted, and recovery finishes it",
    )
