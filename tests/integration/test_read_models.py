"""The read models catalog and the cart keep from other contexts' events: applied, a
duplicate ignored, an older event ignored, a deleted product, and the port each answers
from its model (asking the provider only about products the model has not seen), compared
with the in-process adapter that asks the source of truth.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Table

from bindings.inprocess import CatalogEntries, InventoryStockLevels
from shop.cart.models import inbox as cart_inbox
from shop.cart.ports import CatalogEntry, ProductCatalog
from shop.cart.readmodels import SUBSCRIPTIONS as CART_SUBSCRIPTIONS
from shop.cart.readmodels import ProductsReadModel
from shop.catalog import service as catalog
from shop.catalog.models import inbox as catalog_inbox
from shop.catalog.models import outbox as catalog_outbox
from shop.catalog.ports import StockLevels
from shop.catalog.readmodels import SUBSCRIPTIONS as CATALOG_SUBSCRIPTIONS
from shop.catalog.readmodels import StockLevelsReadModel
from shop.catalog.schemas import CategoryCreate, ProductCreate, ProductUpdate
from shop.inventory import service as inventory
from shop.inventory.models import outbox as inventory_outbox
from shop.kernel.db import Database
from shop.kernel.events import Deliver, Envelope, InProcessBus, Relay, Subscription, consumer
from shop.kernel.types import Money, MoneyIn
from tests.integration.conftest import Connect

pytestmark = pytest.mark.anyio


def delivery(db: Database, inbox: Table, subscriptions: tuple[Subscription, ...]) -> Deliver:
    """The context's subscriptions as the composition root delivers to them."""
    return consumer(db, inbox, {item.type: item.handler for item in subscriptions})


def envelope(
    type_: str, payload: dict[str, Any], sequence: int, event_id: uuid.UUID | None = None
) -> Envelope:
    return Envelope(
        id=event_id or uuid.uuid4(),
        type=type_,
        version=1,
        source=type_.partition(".")[0],
        aggregate_id=str(payload["product_id"]),
        sequence=sequence,
        occurred_at=datetime.now(UTC),
        payload=payload,
    )


class AskedStock:
    """The provider behind catalog's read model: ``inner``'s answers (7 each without one),
    noting what it was asked."""

    def __init__(self, inner: StockLevels | None = None) -> None:
        self.inner = inner
        self.asked: list[set[int]] = []

    async def available(self, product_ids: Collection[int]) -> dict[int, int]:
        self.asked.append(set(product_ids))
        if self.inner is None:
            return dict.fromkeys(product_ids, 7)
        return await self.inner.available(product_ids)


class AskedCatalog:
    """The provider behind the cart's read model: ``inner``'s answers (none without one),
    noting what it was asked."""

    def __init__(self, inner: ProductCatalog | None = None) -> None:
        self.inner = inner
        self.asked: list[set[int]] = []

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        self.asked.append(set(product_ids))
        return {} if self.inner is None else await self.inner.entries(product_ids)


# --------------------------------------------------------------------------- catalog's stock


def stock_changed(
    product_id: int, on_hand: int, reserved: int, sequence: int, **extra: Any
) -> Envelope:
    payload = {
        "product_id": product_id,
        "on_hand": on_hand,
        "reserved": reserved,
        "available": on_hand - reserved,
        **extra,
    }
    return envelope("inventory.StockChanged", payload, sequence)


async def test_catalogs_stock_levels_follow_the_newest_event(connect: Connect) -> None:
    db = await connect(["catalog"])
    deliver = delivery(db, catalog_inbox, CATALOG_SUBSCRIPTIONS)
    inventory_itself = AskedStock()
    levels = StockLevelsReadModel(db, inventory_itself)

    assert await levels.available([1, 2]) == {1: 7, 2: 7}  # nothing seen yet: inventory's
    assert await levels.available([]) == {}
    assert inventory_itself.asked == [{1, 2}]

    first = stock_changed(1, 10, 2, sequence=5, warehouse="north")  # unknown keys: ignored
    await deliver([first])
    assert await levels.available([1, 2, 1]) == {1: 8, 2: 7}
    assert inventory_itself.asked[-1] == {2}
    inventory_itself.asked.clear()

    await deliver([stock_changed(1, 10, 0, sequence=3)])  # older: ignored
    assert await levels.available([1]) == {1: 8}

    await deliver([stock_changed(1, 4, 1, sequence=9)])
    assert await levels.available([1]) == {1: 3}

    await deliver([first])  # delivered again: ignored (the inbox has it)
    assert await levels.available([1]) == {1: 3}
    assert inventory_itself.asked == []  # a product the model knows is never asked of it


async def test_catalogs_read_model_answers_as_inventory_does(connect: Connect) -> None:
    db = await connect(["catalog", "inventory"])
    bus = InProcessBus()
    await bus.subscribe(
        "catalog",
        [item.type for item in CATALOG_SUBSCRIPTIONS],
        delivery(db, catalog_inbox, CATALOG_SUBSCRIPTIONS),
    )
    relay = Relay("inventory", db, inventory_outbox, bus)
    async with db.writer() as session, session.begin():
        await inventory.update_stock(session, product_id=1, on_hand=10)
        await inventory.update_stock(session, product_id=2, on_hand=3)
    async with db.writer() as session, session.begin():
        await inventory.create_reservation(
            session, reservation_id=uuid.uuid4(), lines=[(1, 4), (2, 3)]
        )
        await inventory.update_stock(session, product_id=1, on_hand=12)

    assert await relay.publish_pending() == 5

    wanted = [1, 2, 3]
    truth = await InventoryStockLevels(db).available(wanted)
    assert truth == {1: 8, 2: 0, 3: 0}
    inventory_itself = AskedStock(InventoryStockLevels(db))
    assert await StockLevelsReadModel(db, inventory_itself).available(wanted) == truth
    assert inventory_itself.asked == [{3}]  # the one product without stock


# --------------------------------------------------------------------------- the cart's products


def product_changed(product_id: int, name: str, amount: int, sequence: int) -> Envelope:
    payload = {
        "product_id": product_id,
        "sku": f"SKU-{product_id}",
        "name": name,
        "category_id": 1,
        "price_amount": amount,
        "currency": "EUR",
    }
    return envelope("catalog.ProductChanged", payload, sequence)


def product_deleted(product_id: int, sequence: int) -> Envelope:
    return envelope("catalog.ProductDeleted", {"product_id": product_id}, sequence)


def entry(product_id: int, name: str, amount: int) -> CatalogEntry:
    return CatalogEntry(product_id, name, Money(amount=amount, currency="EUR"))


async def test_the_carts_products_follow_the_newest_event(connect: Connect) -> None:
    db = await connect(["cart"])
    deliver = delivery(db, cart_inbox, CART_SUBSCRIPTIONS)
    catalog_itself = AskedCatalog()
    products = ProductsReadModel(db, catalog_itself)

    assert await products.entries([1]) == {}
    assert await products.entries([]) == {}
    assert catalog_itself.asked == [{1}]
    catalog_itself.asked.clear()

    first = product_changed(1, "Teapot", 1_500, sequence=4)
    await deliver([first])
    await deliver([product_changed(2, "Cup", 250, sequence=6)])
    assert await products.entries([1, 2, 3]) == {
        1: entry(1, "Teapot", 1_500),
        2: entry(2, "Cup", 250),
    }

    await deliver([product_changed(1, "Old teapot", 900, sequence=2)])  # older: ignored
    await deliver([first])  # delivered again: ignored
    assert await products.entries([1]) == {1: entry(1, "Teapot", 1_500)}

    await deliver([product_changed(1, "Big teapot", 2_000, sequence=7)])
    assert await products.entries([1]) == {1: entry(1, "Big teapot", 2_000)}

    await deliver([product_deleted(1, sequence=8)])
    assert await products.entries([1, 2]) == {2: entry(2, "Cup", 250)}

    await deliver([product_changed(1, "Big teapot", 2_000, sequence=7)])  # older than the delete
    assert await products.entries([1]) == {}
    assert catalog_itself.asked == [{3}]  # a known product, deleted or not, is never asked


async def test_a_deletion_that_arrives_first_hides_the_product_for_good(connect: Connect) -> None:
    db = await connect(["cart"])
    deliver = delivery(db, cart_inbox, CART_SUBSCRIPTIONS)

    await deliver([product_deleted(5, sequence=10)])
    await deliver([product_changed(5, "Vase", 3_000, sequence=9)])  # late, and older

    catalog_itself = AskedCatalog()
    assert await ProductsReadModel(db, catalog_itself).entries([5]) == {}
    assert catalog_itself.asked == []


async def test_the_carts_read_model_answers_as_the_catalog_does(connect: Connect) -> None:
    db = await connect(["catalog", "cart"])
    bus = InProcessBus()
    await bus.subscribe(
        "cart",
        [item.type for item in CART_SUBSCRIPTIONS],
        delivery(db, cart_inbox, CART_SUBSCRIPTIONS),
    )
    relay = Relay("catalog", db, catalog_outbox, bus)
    async with db.writer() as session, session.begin():
        category = await catalog.create_category(
            session, data=CategoryCreate(slug="pots", name="Pots")
        )
        ids = [
            (
                await catalog.create_product(
                    session,
                    data=ProductCreate(
                        sku=f"POT-{n}",
                        name=f"Pot {n}",
                        category_id=category.id,
                        price=MoneyIn(amount=1_000 + n, currency="EUR"),
                    ),
                )
            ).id
            for n in range(3)
        ]
    async with db.writer() as session, session.begin():
        await catalog.update_product(
            session,
            product_id=ids[0],
            data=ProductUpdate(name="Renamed", price=MoneyIn(amount=42, currency="EUR")),
        )
        await catalog.delete_product(session, product_id=ids[1])

    assert await relay.publish_pending() == 5

    wanted = [*ids, 999]
    truth = await CatalogEntries(db).entries(wanted)
    assert set(truth) == {ids[0], ids[2]}
    assert truth[ids[0]] == entry(ids[0], "Renamed", 42)
    catalog_itself = AskedCatalog(CatalogEntries(db))
    assert await ProductsReadModel(db, catalog_itself).entries(wanted) == truth
    assert catalog_itself.asked == [{999}]


async def test_a_product_the_cart_has_not_seen_yet_is_asked_of_the_catalog(
    connect: Connect,
) -> None:
    db = await connect(["catalog", "cart"])
    async with db.writer() as session, session.begin():
        category = await catalog.create_category(
            session, data=CategoryCreate(slug="pots", name="Pots")
        )
        made = await catalog.create_product(
            session,
            data=ProductCreate(
                sku="NEW-1",
                name="Brand new",
                category_id=category.id,
                price=MoneyIn(amount=700, currency="EUR"),
            ),
        )

    # No event applied yet: the catalog answers.
    entries = await ProductsReadModel(db, CatalogEntries(db)).entries([made.id])

    assert entries == {made.id: entry(made.id, "Brand new", 700)}
