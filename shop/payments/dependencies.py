"""Payments' request dependencies and the runtime they read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from shop.payments.processor import FakeCardProcessor
from shop.payments.settings import PaymentsSettings


@dataclass(frozen=True)
class PaymentsRuntime:
    """What charging needs besides the database: the processor, and how long a claim lives."""

    processor: FakeCardProcessor
    claim_expiry: timedelta

    @classmethod
    def from_settings(cls, settings: PaymentsSettings) -> PaymentsRuntime:
        return cls(
            processor=FakeCardProcessor(delay_seconds=settings.processor_delay_seconds),
            claim_expiry=timedelta(seconds=settings.claim_expiry_seconds),
        )


async def payments_runtime(request: Request) -> PaymentsRuntime:
    runtime = getattr(request.app.state, "payments", None)
    if not isinstance(runtime, PaymentsRuntime):
        raise RuntimeError("app.state.payments is not set")
    return runtime


Payments = Annotated[PaymentsRuntime, Depends(payments_runtime)]
