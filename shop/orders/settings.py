"""Orders settings (``ORDERS_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from shop.kernel.secrets import shared_secret
from shop.kernel.settings import ShopSettings


class OrdersSettings(ShopSettings, env_prefix="ORDERS_"):
    recovery_interval_seconds: float = Field(
        30.0, gt=0, description="How often interrupted checkouts are looked for"
    )
    recovery_grace_seconds: float = Field(
        12.0,
        ge=1,
        description="The lease of whoever runs a checkout or a cancellation: one that records"
        " no step for this long is taken as interrupted, and recovery (or the client's retry)"
        " goes on with it. Longer than the slowest single call (a charge: the processor's"
        " delay plus 2 s)",
    )
    checkout_deadline_seconds: float = Field(
        10.0,
        gt=0,
        description="How long a checkout rides out a service it needs being unreachable"
        " (retrying, the order pending) before it settles: rejected if nothing was charged",
    )
    answer_within_seconds: float = Field(
        8.0,
        gt=0,
        description="A checkout that has no outcome yet after this long answers 409"
        " idempotency-key-in-flight and runs on; a retry of its key gets the outcome. Below"
        " the gateway's read timeout (10 s)",
    )
    max_units_per_product: int = Field(
        20,
        ge=1,
        le=1000,
        description="Most units of one product in one order: one customer cannot hold all"
        " the stock of a product with one checkout",
    )
    cancellation_window_seconds: float = Field(
        3600.0,
        ge=0,
        description="How long after its confirmation an order may still be cancelled",
    )
    fingerprint_key: SecretStr | None = Field(
        None,
        description="The HMAC key of checkout request fingerprints (a retried key's body is"
        " compared by it); every orders replica needs the same one. Unset: read from"
        " fingerprint_key_file, which is created on first start",
    )
    fingerprint_key_file: Path = Path("var/keys/orders-fingerprint.key")

    def with_fingerprint_key(self) -> OrdersSettings:
        """These settings with ``fingerprint_key`` set, from the key file if need be."""
        if self.fingerprint_key is not None:
            return self
        key = shared_secret(self.fingerprint_key_file).decode()
        return self.model_copy(update={"fingerprint_key": SecretStr(key)})
