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
        30.0,
        gt=0,
        description="A charge still pending after this long died in flight: it is settled"
        " (reversed at the processor, recorded timed out) when its key is asked for",
    )

    @model_validator(mode="after")
    def _claims_outlive_the_processor(self) -> Self:
        if self.claim_expiry_seconds <= self.processor_delay_seconds + 1:
            raise ValueError(
                "claim_expiry_seconds must exceed processor_delay_seconds by more than 1 s,"
                " or a charge still waiting for the processor would be settled under it"
            )
        return self
