"""The fake card processor: deterministic outcomes by card number, for demos and tests."""

from __future__ import annotations

from enum import StrEnum

import anyio

from shop.payments.exceptions import ProcessorTimeout


class Authorization(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"


class FakeCardProcessor:
    """Cards ending 0002 are declined, 0119 time out after ``delay_seconds``, others pass."""

    DECLINE_SUFFIX = "0002"
    TIMEOUT_SUFFIX = "0119"

    def __init__(self, *, delay_seconds: float) -> None:
        self.delay_seconds = delay_seconds

    async def authorize(self, card_number: str, amount: int) -> Authorization:
        if card_number.endswith(self.TIMEOUT_SUFFIX):
            await anyio.sleep(self.delay_seconds)
            raise ProcessorTimeout(f"the processor gave no answer within {self.delay_seconds} s")
        if card_number.endswith(self.DECLINE_SUFFIX) or amount <= 0:
            return Authorization.DECLINED
        return Authorization.APPROVED
