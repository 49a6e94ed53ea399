"""In-process adapters: each port of a context bound to another context's service.

Reads join the current request's transaction when there is one (``Database.read``); each
write step of a saga opens its own short transaction on the one shared database, exactly
where a service would make an HTTP request, so the ports behave alike in both topologies.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from shop.cart import service as cart
from shop.cart.ports import CatalogEntry, ProductCatalog
from shop.catalog import service as catalog
from shop.catalog.ports import StockLevels
from shop.inventory import service as inventory
from shop.inventory.exceptions import OutOfStock as InventoryOutOfStock
from shop.inventory.exceptions import ReservationClosed
from shop.inventory.ports import ProductDirectory
from shop.kernel.db import Database
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
from shop.payments import service as payments
from shop.payments.dependencies import PaymentsRuntime
from shop.payments.exceptions import PaymentInFlight
from shop.payments.schemas import ChargeCreate


class InventoryStockLevels(StockLevels):
    """catalog -> inventory: units available per product."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def available(self, product_ids: Collection[int]) -> dict[int, int]:
        async with self._db.read() as session:
            return await inventory.list_available(session, product_ids=product_ids)


class CatalogProductDirectory(ProductDirectory):
    """inventory -> catalog: does the product exist."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def exists(self, product_id: int) -> bool:
        async with self._db.read() as session:
            return bool(await catalog.get_products(session, product_ids=[product_id]))


class CatalogEntries(ProductCatalog):
    """cart -> catalog: names and prices."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        async with self._db.read() as session:
            products = await catalog.get_products(session, product_ids=list(product_ids))
        return {p.id: CatalogEntry(product_id=p.id, name=p.name, price=p.price) for p in products}


class CatalogPriceList(PriceList):
    """orders -> catalog: prices to snapshot at checkout."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def prices(self, product_ids: Collection[int]) -> dict[int, PricedProduct]:
        async with self._db.read() as session:
            products = await catalog.get_products(session, product_ids=list(product_ids))
        return {p.id: PricedProduct(product_id=p.id, name=p.name, price=p.price) for p in products}


class CartLines(Cart):
    """orders -> cart: what to check out, and emptying it afterwards."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lines(self, user_id: uuid.UUID) -> list[CartLine]:
        async with self._db.read() as session:
            rows = await cart.list_lines(session, user_id=user_id)
        return [CartLine(product_id=row.product_id, quantity=row.quantity) for row in rows]

    async def remove(self, user_id: uuid.UUID, product_ids: Collection[int]) -> None:
        async with self._db.writer() as session, session.begin():
            await cart.delete_items(session, user_id=user_id, product_ids=product_ids)


class InventoryReservations(Stock):
    """orders -> inventory: the stock steps of the checkout saga."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def reserve(self, reservation_id: uuid.UUID, lines: Sequence[CartLine]) -> None:
        try:
            async with self._db.writer() as session, session.begin():
                await inventory.create_reservation(
                    session,
                    reservation_id=reservation_id,
                    lines=[(line.product_id, line.quantity) for line in lines],
                )
        except (InventoryOutOfStock, ReservationClosed) as exc:
            raise OutOfStock(exc.detail, **exc.extra) from exc

    async def commit(self, reservation_id: uuid.UUID) -> None:
        async with self._db.writer() as session, session.begin():
            await inventory.commit_reservation(session, reservation_id=reservation_id)

    async def release(self, reservation_id: uuid.UUID) -> None:
        async with self._db.writer() as session, session.begin():
            await inventory.release_reservation(session, reservation_id=reservation_id)

    async def restock(self, reservation_id: uuid.UUID) -> None:
        async with self._db.writer() as session, session.begin():
            await inventory.return_reservation(session, reservation_id=reservation_id)


class PaymentsProcessor(Payments):
    """orders -> payments: charge, look up, refund."""

    def __init__(self, db: Database, runtime: PaymentsRuntime) -> None:
        self._db = db
        self._runtime = runtime

    async def charge(
        self,
        *,
        key: str,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        amount: Money,
        card_number: str,
    ) -> ChargeStatus:
        try:
            payment = await payments.create_payment(
                self._db,
                processor=self._runtime.processor,
                data=ChargeCreate(
                    idempotency_key=key,
                    order_id=order_id,
                    user_id=user_id,
                    amount=amount,
                    card_number=card_number,
                ),
                claim_expiry=self._runtime.claim_expiry,
            )
        except PaymentInFlight:
            return ChargeStatus.PENDING
        return ChargeStatus(payment.status)

    async def status(self, key: str) -> ChargeStatus | None:
        async with self._db.reader() as session:
            payment = await payments.get_charge(session, key=key)
        return None if payment is None else ChargeStatus(payment.status)

    async def refund(self, *, key: str, order_id: uuid.UUID, user_id: uuid.UUID) -> None:
        await payments.refund_payment(
            self._db,
            processor=self._runtime.processor,
            idempotency_key=key,
            order_id=order_id,
            user_id=user_id,
        )


def checkout_ports(db: Database, payments_runtime: PaymentsRuntime) -> CheckoutPorts:
    return CheckoutPorts(
        cart=CartLines(db),
        prices=CatalogPriceList(db),
        stock=InventoryReservations(db),
        payments=PaymentsProcessor(db, payments_runtime),
    )
