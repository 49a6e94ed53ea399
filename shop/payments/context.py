"""Payments: charges against the card processor, voids and refunds, by idempotency key."""

from __future__ import annotations

from shop.kernel.context import Context, Runtime, SettingsSource
from shop.payments.dependencies import PaymentsRuntime
from shop.payments.models import outbox
from shop.payments.router import internal_router, router
from shop.payments.settings import PaymentsSettings


async def start(runtime: Runtime) -> None:
    runtime.state.payments = PaymentsRuntime.from_settings(runtime.settings(PaymentsSettings))


def call_floor(settings: SettingsSource) -> float:
    # A charge waits for the card processor: a caller's read timeout must outlast it.
    return settings(PaymentsSettings).processor_delay_seconds + 2.0


CONTEXT = Context(
    name="payments",
    router=router,
    internal_router=internal_router,
    prefixes=("/payments",),
    start=start,
    call_floor=call_floor,
    outbox=outbox,
)
