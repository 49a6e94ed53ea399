"""HTTP adapters: each port of a context bound to another service's internal API.

They are the same ports the monolith binds in process (``monolith/adapters.py``); only the
binding differs. Every call goes through a :class:`shop.kernel.http.Upstream` (timeouts,
retries where idempotent, circuit breaker); saga steps are idempotent by order id or key,
so retrying them is safe.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Sequence

from shop.cart.ports import CatalogEntry, ProductCatalog
from shop.catalog.ports import StockLevels
from shop.inventory.ports import ProductDirectory
from shop.kernel.http import Upstream, expect
from shop.kernel.types import Money
from shop.orders.exceptions import OutOfStock
from shop.orders.ports import (
    Cart,
    CartLine,
    ChargeStatus,
    CheckoutPorts,
    Payments,
    PricedProduct,
    PriceList,
    Stock,
)


async def _catalog_entries(catalog: Upstream, product_ids: Collection[int]) -> list[CatalogEntry]:
    if not product_ids:
        return []
    response = await catalog.request(
        "GET",
        "/internal/catalog/products",
        params={"ids": sorted(set(product_ids))},
        idempotent=True,
    )
    return [
        CatalogEntry(
            product_id=entry["product_id"], name=entry["name"], price=Money(**entry["price"])
        )
        for entry in expect(response, 200)
    ]


class InventoryStockLevels(StockLevels):
    """catalog -> inventory: units available per product."""

    def __init__(self, inventory: Upstream) -> None:
        self._inventory = inventory

    async def available(self, product_ids: Collection[int]) -> dict[int, int]:
        if not product_ids:
            return {}
        response = await self._inventory.request(
            "GET",
            "/internal/inventory/available",
            params={"ids": sorted(set(product_ids))},
            idempotent=True,
        )
        return {int(key): int(value) for key, value in expect(response, 200).items()}


class CatalogProductDirectory(ProductDirectory):
    """inventory -> catalog: does the product exist."""

    def __init__(self, catalog: Upstream) -> None:
        self._catalog = catalog

    async def exists(self, product_id: int) -> bool:
        return bool(await _catalog_entries(self._catalog, [product_id]))


class CatalogEntries(ProductCatalog):
    """cart -> catalog: names and prices."""

    def __init__(self, catalog: Upstream) -> None:
        self._catalog = catalog

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        return {e.product_id: e for e in await _catalog_entries(self._catalog, product_ids)}


class CatalogPriceList(PriceList):
    """orders -> catalog: prices to snapshot at checkout."""

    def __init__(self, catalog: Upstream) -> None:
        self._catalog = catalog

    async def prices(self, product_ids: Collection[int]) -> dict[int, PricedProduct]:
        return {
            e.product_id: PricedProduct(product_id=e.product_id, name=e.name, price=e.price)
            for e in await _catalog_entries(self._catalog, product_ids)
        }


class CartLines(Cart):
    """orders -> cart: what to check out, and emptying it afterwards."""

    def __init__(self, cart: Upstream) -> None:
        self._cart = cart

    async def lines(self, user_id: uuid.UUID) -> list[CartLine]:
        response = await self._cart.request(
            "GET", f"/internal/cart/{user_id}/lines", idempotent=True
        )
        return [CartLine(**line) for line in expect(response, 200)]

    async def remove(self, user_id: uuid.UUID, product_ids: Collection[int]) -> None:
        response = await self._cart.request(
            "POST",
            f"/internal/cart/{user_id}/remove",
            json={"product_ids": sorted(product_ids)},
            idempotent=True,
        )
        expect(response, 204)


class InventoryReservations(Stock):
    """orders -> inventory: the stock steps of the checkout saga."""

    def __init__(self, inventory: Upstream) -> None:
        self._inventory = inventory

    async def reserve(self, reservation_id: uuid.UUID, lines: Sequence[CartLine]) -> None:
        response = await self._inventory.request(
            "PUT",
            f"/internal/inventory/reservations/{reservation_id}",
            json={"lines": [dataclasses.asdict(line) for line in lines]},
            idempotent=True,
        )
        if response.status_code == 409:
            problem = response.json()
            raise OutOfStock(problem["detail"], product_ids=problem.get("product_ids", []))
        expect(response, 200)

    async def _step(self, reservation_id: uuid.UUID, action: str) -> None:
        response = await self._inventory.request(
            "POST", f"/internal/inventory/reservations/{reservation_id}/{action}", idempotent=True
        )
        expect(response, 200)

    async def commit(self, reservation_id: uuid.UUID) -> None:
        await self._step(reservation_id, "commit")

    async def release(self, reservation_id: uuid.UUID) -> None:
        await self._step(reservation_id, "release")

    async def restock(self, reservation_id: uuid.UUID) -> None:
        await self._step(reservation_id, "return")


class PaymentsProcessor(Payments):
    """orders -> payments: charge, look up, refund (all idempotent by key)."""

    def __init__(self, payments: Upstream) -> None:
        self._payments = payments

    async def charge(
        self,
        *,
        key: str,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        amount: Money,
        card_number: str,
    ) -> ChargeStatus:
        response = await self._payments.request(
            "PUT",
            f"/internal/payments/charges/{key}",
            json={
                "order_id": str(order_id),
                "user_id": str(user_id),
                "amount": amount.model_dump(),
                "card_number": card_number,
            },
            idempotent=True,
        )
        return ChargeStatus(expect(response, 200)["status"])

    async def status(self, key: str) -> ChargeStatus | None:
        response = await self._payments.request(
            "GET", f"/internal/payments/charges/{key}", idempotent=True
        )
        if response.status_code == 404:
            return None
        return ChargeStatus(expect(response, 200)["status"])

    async def refund(self, *, key: str, order_id: uuid.UUID, user_id: uuid.UUID) -> None:
        response = await self._payments.request(
            "POST",
            f"/internal/payments/charges/{key}/refund",
            json={"order_id": str(order_id), "user_id": str(user_id)},
            idempotent=True,
        )
        expect(response, 200)


def checkout_ports(
    *, cart: Upstream, catalog: Upstream, inventory: Upstream, payments: Upstream
) -> CheckoutPorts:
    return CheckoutPorts(
        cart=CartLines(cart),
        prices=CatalogPriceList(catalog),
        stock=InventoryReservations(inventory),
        payments=PaymentsProcessor(payments),
    )
