"""Payments settings (``PAYMENTS_*``)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from shop.kernel.settings import ShopSettings


class PaymentsSettings(ShopSettings, env_prefix="PAYMENTS_"):
    processor_delay_seconds: float = Field(
        2.0, ge=0, le=60, description="How long a card ending 0119 waits before timing out"
    )
    claim_expiry_seconds: float = Field(
        5.0,
        gt=0,
        description="How long a charge holds its key's claim while the processor is asked; a"
        " claim still unsettled after that died with its request, and the next charge with the"
        " key takes it over (asking the processor again under the same idempotency key)",
    )

    @model_validator(mode="after")
    def _claims_outlive_the_processor(self) -> Self:
        if self.claim_expiry_seconds <= self.processor_delay_seconds + 1:
            raise ValueError(
                "claim_expiry_seconds must exceed processor_delay_seconds by more than 1 s,"
                " or a charge still waiting for the processor would be settled under it"
            )
        return self
