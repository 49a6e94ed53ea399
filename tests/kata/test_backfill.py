"""``python -m kata migrate-data --step 7``: step 7 extracts no context; it builds catalog's
and the cart's read models from inventory's and catalog's databases, verified, once.

The data is the kata's own: the monolith's (made through its API, tests/kata/test_data_move.py)
moved to the services' databases by steps 2-6, then changed at step 6, where no broker
carries the events (the read models in catalog's and the cart's databases fall behind).
Each test runs on SQLite, or on PostgreSQL with TEST_DATABASE_URL, on scratch databases.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Table, func, select

from composition.backfill import Feed
from kata import data, steps
from launcher import databases
from shop.cart.models import inbox as cart_inbox
from shop.cart.models import products as cart_products
from shop.cart.ports import ProductCatalog
from shop.catalog import service as catalog
from shop.catalog.models import inbox as catalog_inbox
from shop.catalog.models import outbox as catalog_outbox
from shop.catalog.models import stock_levels
from shop.catalog.ports import StockLevels
from shop.catalog.schemas import ProductUpdate
from shop.inventory import service as inventory
from shop.inventory.models import outbox as inventory_outbox
from shop.kernel.db import Database
from shop.kernel.migrations import CONTEXTS
from shop.kernel.topology import load
from shop.kernel.types import MoneyIn
from tests import support
from tests.kata.test_data_move import TEST_SECONDS, Layout, _drop, _kata, fill_monolith

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    server = support.postgres_server_url()
    made = Layout(server or "sqlite", f"kb{uuid.uuid4().hex[:10]}", tmp_path / "kata")
    made.folder.mkdir()
    try:
        yield made
    finally:
        if server is not None:
            names = [databases.database_name(made.data, s) for s in ("monolith", *CONTEXTS)]
            asyncio.run(_drop(server, names))


async def _rows(url: str, table: Table) -> list[tuple[object, ...]]:
    db = Database.connect(url)
    try:
        async with db.reader() as session:
            result = await session.execute(select(table).order_by(*table.primary_key.columns))
            return [tuple(row) for row in result]
    finally:
        await db.dispose()


async def _last_position(url: str, outbox: Table) -> int:
    db = Database.connect(url)
    try:
        async with db.reader() as session:
            return int(await session.scalar(select(func.max(outbox.c.position))) or 0)
    finally:
        await db.dispose()


async def _change_at_step_6(layout: Layout, product_id: int) -> None:
    """What step 6 does without a broker: inventory's and catalog's events reach nobody."""
    for service, change in (("inventory", "stock"), ("catalog", "price")):
        db = Database.connect(layout.url(service))
        try:
            async with db.writer() as session, session.begin():
                if change == "stock":
                    await inventory.update_stock(session, product_id=product_id, on_hand=77)
                else:
                    await catalog.update_product(
                        session,
                        product_id=product_id,
                        data=ProductUpdate(price=MoneyIn(amount=4242, currency="EUR")),
                    )
        finally:
            await db.dispose()


def test_step_7_reads_the_models_whose_providers_run_elsewhere() -> None:
    for choice in ("sqlite", "postgres"):
        topology = load(REPO / steps.step(7).topology)
        urls = databases.service_urls(steps.DATA_NAME, topology.services, choice)
        assert data.step_feeds(7, choice) == [
            (Feed("catalog", "cart", (ProductCatalog,)), urls["catalog"], urls["cart"]),
            (Feed("inventory", "catalog", (StockLevels,)), urls["inventory"], urls["catalog"]),
        ]
    for step in steps.STEPS[:7]:
        assert data.step_feeds(step.number, "sqlite") == [], step  # no broker before step 7
    assert data.step_urls(7, "sqlite") == {}  # and no context leaves at step 7


def test_step_7_backfills_the_read_models_once(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    monolith = layout.url("monolith")
    if support.postgres_server_url() is not None:
        asyncio.run(databases.ensure_postgres_databases_async(layout.database, {"m": monolith}))
    shop = asyncio.run(asyncio.wait_for(fill_monolith(monolith), TEST_SECONDS))
    assert _kata("--step", "6", "--up-to", *layout.args()) == 0
    capsys.readouterr()
    product = shop.products[2]["id"]
    asyncio.run(_change_at_step_6(layout, product))
    stale = asyncio.run(_rows(layout.url("catalog"), stock_levels))
    assert (product, 77) not in {(row[0], row[1]) for row in stale}

    assert _kata("--step", "7", *layout.args()) == 0
    out = capsys.readouterr().out
    assert "cart <- catalog: delivering catalog's snapshot (6 aggregates)" in out, out
    assert "catalog <- inventory: delivering inventory's snapshot (6 aggregates)" in out, out
    assert "6 events delivered at sequence" in out
    assert (
        "verified: the read model answers as inventory does (StockLevels) for all 6 aggregates"
    ) in out
    assert "verified: the read model answers as catalog does (ProductCatalog)" in out
    assert out.index("cart <- catalog") < out.index("catalog <- inventory")

    position = asyncio.run(_last_position(layout.url("inventory"), inventory_outbox))
    levels = asyncio.run(_rows(layout.url("catalog"), stock_levels))
    assert len(levels) == 6
    assert (product, 77, 0, 77, position) in levels
    products = asyncio.run(_rows(layout.url("cart"), cart_products))
    assert [row[2] for row in products if row[0] == product] == [4242]
    assert {row[5] for row in products} == {
        asyncio.run(_last_position(layout.url("catalog"), catalog_outbox))
    }

    # A rerun (and `make up STEP=7`, which moves data up to the step) changes nothing.
    before = [
        asyncio.run(_rows(layout.url(service), table))
        for service, table in (
            ("catalog", stock_levels),
            ("catalog", catalog_inbox),
            ("cart", cart_products),
            ("cart", cart_inbox),
        )
    ]
    assert _kata("--step", "7", "--up-to", "--if-present", *layout.args()) == 0
    out = capsys.readouterr().out
    assert "already moved at" in out
    assert out.count("of its aggregates already: nothing to deliver") == 2, out
    after = [
        asyncio.run(_rows(layout.url(service), table))
        for service, table in (
            ("catalog", stock_levels),
            ("catalog", catalog_inbox),
            ("cart", cart_products),
            ("cart", cart_inbox),
        )
    ]
    assert after == before

    # The rollback leaves the read models as they are, and says so.
    assert _kata("--step", "7", "--reverse", *layout.args()) == 0
    out = capsys.readouterr().out
    assert "the rollback leaves them in place, unchanged" in out, out
    assert "catalog's of inventory" in out
    assert "moved back" not in out
    assert asyncio.run(_rows(layout.url("catalog"), stock_levels)) == levels

    # A read model that does not verify is an error naming the product.
    db = Database.connect(layout.url("catalog"))

    async def tamper() -> None:
        try:
            async with db.writer() as session, session.begin():
                await session.execute(
                    stock_levels.update()
                    .where(stock_levels.c.product_id == product)
                    .values(available=5, sequence=position + 1000)
                )
        finally:
            await db.dispose()

    asyncio.run(tamper())
    assert _kata("--step", "7", *layout.args()) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(
        "error: catalog <- inventory: catalog's read model (StockLevels) does not answer as"
        " inventory does"
    ), captured.err
    assert f"{product} (read model: 5, inventory: 77)" in captured.err
    assert "Traceback" not in captured.err


def test_a_fresh_start_has_no_read_model_to_build(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _kata("--step", "7", "--up-to", "--if-present", *layout.args()) == 0
    out = capsys.readouterr().out
    assert out.count("(a fresh start): no read model to build; it fills from the events") == 2
    assert list(layout.folder.iterdir()) == [], "a database was created"
    assert _kata("--step", "7", *layout.args()) == 1
    err = capsys.readouterr().err
    assert "there is nothing to build cart's read model from" in err, err
    assert list(layout.folder.iterdir()) == [], "a database was created"
