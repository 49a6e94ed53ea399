"""A read model built from its provider's past: the providers' snapshots, the backfill that
delivers them through the consumer's own handlers, and the verification that compares the
model's answers with the provider's.

The provider's database holds inventory and catalog (their changes recorded in the outboxes,
and never relayed: every event is still pending); the consumer's holds catalog's and the
cart's read models, empty at first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select, update

from bindings.inprocess import CatalogEntries, InventoryStockLevels
from composition.backfill import BackfillError, Feed, backfill, feed, feeds, snapshot_ids, verify
from composition.contexts import CompositionError, declared
from shop.cart.models import inbox as cart_inbox
from shop.cart.models import products as cart_products
from shop.cart.ports import ProductCatalog
from shop.cart.readmodels import SUBSCRIPTIONS as CART_SUBSCRIPTIONS
from shop.catalog import service as catalog
from shop.catalog.events import ProductChanged, ProductDeleted
from shop.catalog.models import inbox as catalog_inbox
from shop.catalog.models import outbox as catalog_outbox
from shop.catalog.models import stock_levels
from shop.catalog.ports import StockLevels
from shop.catalog.readmodels import SUBSCRIPTIONS as CATALOG_SUBSCRIPTIONS
from shop.catalog.schemas import CategoryCreate, ProductCreate, ProductUpdate
from shop.inventory import service as inventory
from shop.inventory.events import StockChanged
from shop.inventory.models import outbox as inventory_outbox
from shop.kernel.db import Database
from shop.kernel.events import Envelope, Event, consumer, snapshot_session
from shop.kernel.topology import parse
from shop.kernel.types import MoneyIn
from tests import support

pytestmark = pytest.mark.anyio

STOCK = feed("inventory", "catalog")
PRODUCTS = feed("catalog", "cart")


@dataclass
class Shop:
    provider: Database
    """inventory's and catalog's tables, with their outboxes."""
    consumer: Database
    """catalog's and the cart's tables: their read models and inboxes."""
    product_ids: list[int]


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    async with (
        support.scratch_database(tmp_path) as provider_url,
        support.scratch_database(tmp_path) as consumer_url,
    ):
        await support.migrate(provider_url, ["inventory", "catalog"])
        await support.migrate(consumer_url, ["catalog", "cart"])
        provider = Database.connect(provider_url)
        consumer_db = Database.connect(consumer_url)
        try:
            ids = await _fill(provider)
            yield Shop(provider, consumer_db, ids)
        finally:
            await provider.dispose()
            await consumer_db.dispose()


async def _fill(db: Database) -> list[int]:
    """Five products (the last one deleted, the fourth never stocked); stock moved twice for
    the first: every change recorded in the outboxes, none relayed."""
    async with db.writer() as session, session.begin():
        category = await catalog.create_category(
            session, data=CategoryCreate(slug="tea", name="Tea")
        )
        ids = []
        for index in range(5):
            product = await catalog.create_product(
                session,
                data=ProductCreate(
                    sku=f"SKU-{index}",
                    name=f"Pot {index}",
                    category_id=category.id,
                    price=MoneyIn(amount=1000 + index, currency="EUR"),
                ),
            )
            ids.append(product.id)
        await catalog.update_product(
            session,
            product_id=ids[1],
            data=ProductUpdate(name="Pot 1 (new)", price=MoneyIn(amount=1500, currency="EUR")),
        )
        await catalog.delete_product(session, product_id=ids[4])
        for index, product_id in enumerate(ids):
            if index != 3:
                await inventory.update_stock(session, product_id=product_id, on_hand=10 + index)
        await inventory.update_stock(session, product_id=ids[0], on_hand=4)
    return ids


async def _rows(db: Database, table: Table) -> list[tuple[Any, ...]]:
    async with db.reader() as session:
        result = await session.execute(select(table).order_by(*table.primary_key.columns))
        return [tuple(row) for row in result]


async def _count(db: Database, table: Table) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def _last_position(db: Database, outbox: Table) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.max(outbox.c.position))) or 0)


async def _outbox_envelopes(db: Database, outbox: Table, source: str) -> list[Envelope]:
    """The outbox's rows as the relay would publish them."""
    async with db.reader() as session:
        rows = (await session.execute(select(outbox).order_by(outbox.c.position))).mappings()
        return [
            Envelope(
                id=row["event_id"],
                type=row["type"],
                version=row["version"],
                source=source,
                aggregate_id=row["aggregate_id"],
                sequence=row["position"],
                occurred_at=row["occurred_at"],
                payload=row["payload"],
            )
            for row in rows
        ]


async def _snapshot(db: Database, context: str) -> list[tuple[str, Event]]:
    snapshot = declared()[context].snapshot
    assert snapshot is not None
    async with snapshot_session(db) as session:
        return [item async for item in snapshot(session)]


def _quiet(_line: str) -> None:
    """Progress goes nowhere."""


# --------------------------------------------------------------------------- the snapshots


async def test_the_snapshots_give_every_aggregate_as_its_last_event(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = shop.product_ids
    monkeypatch.setattr(inventory, "SNAPSHOT_BATCH", 2)  # several pages
    monkeypatch.setattr(catalog, "SNAPSHOT_BATCH", 2)
    assert await _snapshot(shop.provider, "inventory") == [
        (str(ids[0]), StockChanged(product_id=ids[0], on_hand=4, reserved=0, available=4)),
        (str(ids[1]), StockChanged(product_id=ids[1], on_hand=11, reserved=0, available=11)),
        (str(ids[2]), StockChanged(product_id=ids[2], on_hand=12, reserved=0, available=12)),
        (str(ids[4]), StockChanged(product_id=ids[4], on_hand=14, reserved=0, available=14)),
    ]
    products = await _snapshot(shop.provider, "catalog")
    assert [aggregate for aggregate, _ in products] == [str(i) for i in ids]
    assert products[1][1] == ProductChanged(
        product_id=ids[1],
        sku="SKU-1",
        name="Pot 1 (new)",
        category_id=products[0][1].model_dump()["category_id"],
        price_amount=1500,
        currency="EUR",
    )
    assert all(isinstance(event, ProductChanged) for _, event in products[:4])
    assert products[4][1] == ProductDeleted(product_id=ids[4])
    # Each is what the publisher's last recorded event about the aggregate said.
    for outbox, source, snapshot in (
        (inventory_outbox, "inventory", await _snapshot(shop.provider, "inventory")),
        (catalog_outbox, "catalog", products),
    ):
        last = {
            envelope.aggregate_id: envelope.payload
            for envelope in await _outbox_envelopes(shop.provider, outbox, source)
        }
        assert {aggregate: event.model_dump(mode="json") for aggregate, event in snapshot} == last


def test_a_topology_with_a_broker_reads_the_models_of_providers_served_elsewhere() -> None:
    services = {
        name: {"contexts": [name], "port": 8100 + index}
        for index, name in enumerate(("identity", "catalog", "inventory", "cart", "orders"))
    }
    services["payments"] = {"contexts": ["payments"], "port": 8190}
    brokered = parse({"name": "t", "bus": "rabbitmq", "services": services})
    assert feeds(brokered) == [
        Feed("catalog", "cart", (ProductCatalog,)),
        Feed("inventory", "catalog", (StockLevels,)),
    ]
    assert feeds(parse({"name": "t", "services": services})) == []  # in process: no model read
    together = dict(services)
    del together["inventory"]
    together["catalog"] = {"contexts": ["catalog", "inventory"], "port": 8101}
    assert feeds(parse({"name": "t", "bus": "rabbitmq", "services": together})) == [
        Feed("catalog", "cart", (ProductCatalog,))
    ]
    with pytest.raises(CompositionError, match="inventory keeps no read model of catalog"):
        feed("catalog", "inventory")


# --------------------------------------------------------------------------- the backfill


async def test_the_backfill_builds_the_models_and_verifies_them(shop: Shop) -> None:
    ids = shop.product_ids
    lines: list[str] = []
    stock = await backfill(
        STOCK, source=shop.provider, target=shop.consumer, progress=lines.append, every=2
    )
    position = await _last_position(shop.provider, inventory_outbox)
    assert (stock.aggregates, stock.delivered, stock.applied) == (4, 4, 4)
    assert stock.position == position
    # Built by catalog's own handler, at inventory's last outbox position.
    assert await _rows(shop.consumer, stock_levels) == [
        (ids[0], 4, 0, 4, position),
        (ids[1], 11, 0, 11, position),
        (ids[2], 12, 0, 12, position),
        (ids[4], 14, 0, 14, position),
    ]
    assert await _count(shop.consumer, catalog_inbox) == 4
    assert "catalog <- inventory: 2 events delivered" in lines
    assert any("4 events delivered at sequence" in line for line in lines), lines
    assert lines[-1] == (
        "catalog <- inventory: verified: the read model answers as inventory does"
        " (StockLevels) for all 4 aggregates"
    )

    products = await backfill(PRODUCTS, source=shop.provider, target=shop.consumer, progress=_quiet)
    assert (products.aggregates, products.applied) == (5, 5)
    rows = await _rows(shop.consumer, cart_products)
    assert [(row[0], row[1], row[2], row[4]) for row in rows[:2]] == [
        (ids[0], "Pot 0", 1000, False),
        (ids[1], "Pot 1 (new)", 1500, False),
    ]
    assert rows[4][0] == ids[4]
    assert rows[4][4] is True  # deleted: the cart leaves it out, as catalog does
    sequence = await _last_position(shop.provider, catalog_outbox)
    assert {row[5] for row in rows} == {sequence}

    # The models answer as the providers, with no provider behind them.
    # (Product 3 has no stock row: the model would ask inventory, which answers 0.)
    stocked = [ids[0], ids[1], ids[2], ids[4]]
    truth = InventoryStockLevels(shop.provider)
    assert await _model(STOCK, shop).available(stocked) == await truth.available(stocked)
    entries = await CatalogEntries(shop.provider).entries(ids)
    assert await _model(PRODUCTS, shop).entries(ids) == entries
    assert sorted(entries) == ids[:4]


def _model(item: Feed, shop: Shop) -> Any:
    """The consumer's read model of ``item``'s port, whose provider must never be asked."""

    class Never:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the read model asked its provider ({name})")

    port = item.ports[0]
    return declared()[item.consumer].read_models[port](shop.consumer, Never())


async def test_a_rerun_changes_nothing(shop: Shop) -> None:
    for item in (STOCK, PRODUCTS):
        await backfill(item, source=shop.provider, target=shop.consumer, progress=_quiet)
    before = [
        await _rows(shop.consumer, table)
        for table in (stock_levels, cart_products, catalog_inbox, cart_inbox)
    ]
    for item in (STOCK, PRODUCTS):
        lines: list[str] = []
        again = await backfill(
            item, source=shop.provider, target=shop.consumer, progress=lines.append
        )
        assert (again.delivered, again.applied, again.position) == (0, 0, None)
        assert lines == [
            f"{item.label}: the read model answers as {item.provider} does for all"
            f" {again.aggregates} of its aggregates already: nothing to deliver"
        ]
    after = [
        await _rows(shop.consumer, table)
        for table in (stock_levels, cart_products, catalog_inbox, cart_inbox)
    ]
    assert after == before


async def test_an_older_pending_event_loses_and_a_later_one_wins(shop: Shop) -> None:
    ids = shop.product_ids
    deliver = consumer(
        shop.consumer, catalog_inbox, {item.type: item.handler for item in CATALOG_SUBSCRIPTIONS}
    )
    pending = await _outbox_envelopes(shop.provider, inventory_outbox, "inventory")
    await backfill(STOCK, source=shop.provider, target=shop.consumer, progress=_quiet)
    # The relay publishes what waited in the outbox: every one of those events is older than
    # the snapshot (product 0's first one said 10 units) and none moves the model back.
    first = next(e for e in pending if e.aggregate_id == str(ids[0]))
    assert first.payload["on_hand"] == 10
    for envelope in pending:
        await deliver([envelope])
    assert await _model(STOCK, shop).available([ids[0]]) == {ids[0]: 4}
    assert await _count(shop.consumer, catalog_inbox) == 4 + len(pending)  # applied, refused

    # A change after the backfill: its event is newer than the snapshot, and wins.
    async with shop.provider.writer() as session, session.begin():
        await inventory.update_stock(session, product_id=ids[0], on_hand=30)
        await inventory.update_stock(session, product_id=ids[3], on_hand=3)  # a new item
    later = (await _outbox_envelopes(shop.provider, inventory_outbox, "inventory"))[-2:]
    for envelope in later:
        await deliver([envelope])
    assert await _model(STOCK, shop).available([ids[0], ids[3]]) == {ids[0]: 30, ids[3]: 3}
    await verify(
        STOCK,
        source=shop.provider,
        target=shop.consumer,
        ids=await snapshot_ids(STOCK, shop.provider),
    )

    # The same for the cart's model of the catalog.
    cart = consumer(
        shop.consumer, cart_inbox, {item.type: item.handler for item in CART_SUBSCRIPTIONS}
    )
    older = await _outbox_envelopes(shop.provider, catalog_outbox, "catalog")
    await backfill(PRODUCTS, source=shop.provider, target=shop.consumer, progress=_quiet)
    for envelope in older:  # product 1 added as "Pot 1", renamed after; product 4 deleted
        await cart([envelope])
    entries = await _model(PRODUCTS, shop).entries(ids)
    assert entries[ids[1]].name == "Pot 1 (new)"
    assert ids[4] not in entries
    async with shop.provider.writer() as session, session.begin():
        await catalog.update_product(
            session, product_id=ids[1], data=ProductUpdate(name="Pot 1 (newer)")
        )
    newer = (await _outbox_envelopes(shop.provider, catalog_outbox, "catalog"))[-1]
    await cart([newer])
    assert (await _model(PRODUCTS, shop).entries([ids[1]]))[ids[1]].name == "Pot 1 (newer)"


async def test_the_verification_names_what_differs(shop: Shop) -> None:
    ids = shop.product_ids
    for item in (STOCK, PRODUCTS):
        await backfill(item, source=shop.provider, target=shop.consumer, progress=_quiet)
    stock_ids = await snapshot_ids(STOCK, shop.provider)
    async with shop.consumer.writer() as session, session.begin():
        # A hand-written number, newer than any event: no backfill may overwrite it.
        await session.execute(
            update(stock_levels)
            .where(stock_levels.c.product_id == ids[2])
            .values(available=999, sequence=10**9)
        )
        await session.execute(stock_levels.delete().where(stock_levels.c.product_id == ids[1]))
    with pytest.raises(BackfillError) as caught:
        await verify(STOCK, source=shop.provider, target=shop.consumer, ids=stock_ids)
    message = str(caught.value)
    assert "catalog's read model (StockLevels) does not answer as inventory does" in message
    assert f"1 aggregate it has no row for: {ids[1]}" in message
    assert f"1 aggregate answered differently: {ids[2]} (read model: 999, inventory: 12)" in (
        message
    )

    # A backfill fills the missing row, but cannot overwrite the newer hand-written one.
    with pytest.raises(BackfillError, match="delete them and backfill again") as again:
        await backfill(STOCK, source=shop.provider, target=shop.consumer, progress=_quiet)
    assert "no row for" not in str(again.value)
    assert f"{ids[2]} (read model: 999, inventory: 12)" in str(again.value)
    async with shop.consumer.writer() as session, session.begin():
        await session.execute(stock_levels.delete().where(stock_levels.c.product_id == ids[2]))
    done = await backfill(STOCK, source=shop.provider, target=shop.consumer, progress=_quiet)
    assert done.applied == 4

    # The cart's model: a price changed by hand.
    async with shop.consumer.writer() as session, session.begin():
        await session.execute(
            update(cart_products).where(cart_products.c.product_id == ids[0]).values(price_amount=1)
        )
    with pytest.raises(BackfillError, match=f"answered differently: {ids[0]} ") as cart:
        await verify(
            PRODUCTS,
            source=shop.provider,
            target=shop.consumer,
            ids=await snapshot_ids(PRODUCTS, shop.provider),
        )
    assert "amount=1," in str(cart.value)
    assert "amount=1000," in str(cart.value)
    # A backfill puts the price back (the row's sequence is the last backfill's, not newer).
    async with shop.provider.writer() as session, session.begin():
        await catalog.update_product(session, product_id=ids[2], data=ProductUpdate(name="X"))
    await backfill(PRODUCTS, source=shop.provider, target=shop.consumer, progress=_quiet)
    assert (await _model(PRODUCTS, shop).entries([ids[0]]))[ids[0]].price.amount == 1000
