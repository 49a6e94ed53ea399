"""What orders needs from other contexts, in orders' terms.

Checkout is a saga over these ports: each call is its own transaction (in the monolith)
or its own request (between services), and each is idempotent by the order id or key.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from shop.kernel.types import Money


@dataclass(frozen=True)
class CartLine:
    product_id: int
    quantity: int


@dataclass(frozen=True)
class PricedProduct:
    product_id: int
    name: str
    price: Money


class ChargeStatus(StrEnum):
    PENDING = "pending"
    """Payments is still asking the card processor; the outcome is not known yet."""
    CAPTURED = "captured"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    REFUNDED = "refunded"
    VOIDED = "voided"


class Cart(Protocol):
    async def lines(self, user_id: uuid.UUID) -> list[CartLine]: ...

    async def remove(self, user_id: uuid.UUID, product_ids: Collection[int]) -> None:
        """Take the ordered products out of the user's cart."""
        ...


class PriceList(Protocol):
    async def prices(self, product_ids: Collection[int]) -> dict[int, PricedProduct]:
        """Current prices; products no longer sold are left out."""
        ...


class Stock(Protocol):
    async def reserve(self, reservation_id: uuid.UUID, lines: Sequence[CartLine]) -> None:
        """Hold every line or none; raises ``orders.exceptions.OutOfStock``."""
        ...

    async def commit(self, reservation_id: uuid.UUID) -> None: ...

    async def release(self, reservation_id: uuid.UUID) -> None: ...

    async def restock(self, reservation_id: uuid.UUID) -> None:
        """Put committed units back on hand (a cancelled order)."""
        ...


class Payments(Protocol):
    async def charge(
        self,
        *,
        key: str,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        amount: Money,
        card_number: str,
    ) -> ChargeStatus:
        """Charge once per ``key``; a replayed key returns the first outcome."""
        ...

    async def status(self, key: str) -> ChargeStatus | None:
        """The outcome recorded for ``key``, or None if it never reached payments."""
        ...

    async def refund(self, *, key: str, order_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Refund the key's charge; with none yet, void the key so a late charge fails."""
        ...


@dataclass(frozen=True)
class CheckoutPorts:
    cart: Cart
    prices: PriceList
    stock: Stock
    payments: Payments
