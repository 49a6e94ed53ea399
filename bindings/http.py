"""HTTP adapters: each port of a context bound to another process's internal API.

They are the same ports a process binds in process (``bindings/inprocess.py``) when it serves
both contexts; only the binding differs. A service binds them to the other services; a kata
step's monolith binds them to the contexts already extracted from it.

Every call goes through a :class:`shop.kernel.http.Upstream` (timeouts, retries where
idempotent, circuit breaker); saga steps are idempotent by order id or key, so retrying them
is safe.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import httpx2

from shop.cart.ports import CatalogEntry, ProductCatalog
from shop.catalog.ports import StockLevels
from shop.inventory.ports import ProductDirectory
from shop.kernel.http import (
    INTERNAL_TOKEN_HEADER,
    CircuitBreaker,
    Timeouts,
    Upstream,
    expect,
)
from shop.kernel.security import JwksSource, jwks_document
from shop.kernel.settings import RemoteCallSettings
from shop.kernel.topology import Topology
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
    return expect(
        response,
        200,
        read=lambda body: [
            CatalogEntry(
                product_id=entry["product_id"], name=entry["name"], price=Money(**entry["price"])
            )
            for entry in body
        ],
    )


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
        return expect(
            response, 200, read=lambda body: {int(key): int(value) for key, value in body.items()}
        )


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
        return expect(response, 200, read=lambda body: [CartLine(**line) for line in body])

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
            detail, product_ids = expect(
                response,
                409,
                read=lambda problem: (str(problem["detail"]), list(problem.get("product_ids", []))),
            )
            raise OutOfStock(detail, product_ids=product_ids)
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


def _charge_status(body: Any) -> ChargeStatus:
    return ChargeStatus(body["status"])


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
        if response.status_code == 409:
            # Claimed by an earlier attempt that is still with the card processor.
            return ChargeStatus.PENDING
        return expect(response, 200, read=_charge_status)

    async def status(self, key: str) -> ChargeStatus | None:
        response = await self._payments.request(
            "GET", f"/internal/payments/charges/{key}", idempotent=True
        )
        if response.status_code == 404:
            return None
        return expect(response, 200, read=_charge_status)

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


def upstream(
    context: str,
    topology: Topology,
    settings: RemoteCallSettings,
    *,
    internal_token: str,
    read_floor: float = 0.0,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> Upstream:
    """The upstream of whichever service of ``topology`` serves ``context`` now.

    ``transports`` (by service name) wires apps in process, as the tests do; otherwise the
    calls go to the service's replicas on 127.0.0.1. ``read_floor`` raises the read timeout
    for calls that are slow by nature (a card charge waits for the processor).
    """
    spec = topology.owner(context)
    transport = (transports or {}).get(spec.name)
    urls = [f"http://{spec.name}"] if transport is not None else spec.urls()
    read = max(settings.read_timeout_seconds, read_floor)
    return Upstream(
        spec.name,
        urls,
        transport=transport,
        timeouts=Timeouts(
            connect=settings.connect_timeout_seconds,
            read=read,
            budget=max(settings.budget_seconds, read + settings.connect_timeout_seconds),
        ),
        retries=settings.retries,
        breaker=CircuitBreaker(
            threshold=settings.breaker_threshold, reset_after=settings.breaker_reset_seconds
        ),
        headers={INTERNAL_TOKEN_HEADER: internal_token},
    )


def remote_jwks(identity: Upstream) -> JwksSource:
    """Identity's public keys over HTTP (TokenVerifier caches them)."""

    async def load_jwks() -> dict[str, Any]:
        response = await identity.request("GET", "/.well-known/jwks.json", idempotent=True)
        return expect(response, 200, read=jwks_document)

    return load_jwks
