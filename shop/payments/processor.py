"""The fake card processor: deterministic outcomes by card number, for demos and tests.

It behaves like a real processor where that matters to the shop's correctness: every call
carries the payment's idempotency key, a repeated key authorizes nothing more and answers
the first outcome, and a reversal cancels the key's authorization and refuses any later one
(so a reversal that overtakes a slow authorization still wins). It keeps a ledger of what
it did, which the tests read to count money movements.
"""

from __future__ import annotations

from collections import Counter
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
        self._outcomes: dict[str, Authorization] = {}
        self.authorized: Counter[str] = Counter()
        """Authorizations made, by idempotency key (a replayed key adds none)."""
        self.reversed: set[str] = set()
        """Keys whose authorization was cancelled (or refused in advance)."""
        self.refunded: set[str] = set()

    async def authorize(self, *, key: str, card_number: str, amount: int) -> Authorization:
        """Authorize and capture ``amount``, once per ``key``."""
        if key in self._outcomes:
            return self._outcomes[key]
        if card_number.endswith(self.TIMEOUT_SUFFIX):
            await anyio.sleep(self.delay_seconds)
            raise ProcessorTimeout(f"the processor gave no answer within {self.delay_seconds} s")
        if key in self.reversed or card_number.endswith(self.DECLINE_SUFFIX) or amount <= 0:
            outcome = Authorization.DECLINED
        else:
            outcome = Authorization.APPROVED
            self.authorized[key] += 1
        self._outcomes[key] = outcome
        return outcome

    async def reverse(self, *, key: str) -> None:
        """Cancel the key's authorization, if any, and refuse any later one. Idempotent."""
        self.reversed.add(key)

    async def refund(self, *, key: str) -> None:
        """Pay a captured charge back. Idempotent."""
        self.refunded.add(key)

    def holds(self, key: str) -> bool:
        """Whether money is taken for ``key`` now: authorized, never reversed or refunded."""
        return bool(self.authorized[key]) and key not in self.reversed | self.refunded
