"""``python -m kata migrate-data``: a context's rows move from the monolith's database to its
service's, verified, once, and back again.

The monolith's data is made by the monolith itself (in process, through its HTTP API):
an admin, customers, categories, products (one archived), stock, carts, a confirmed order,
a declined one and a cancelled (refunded) one, so every table of every context has rows.
Each test runs on SQLite, or on PostgreSQL with TEST_DATABASE_URL, on scratch databases.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]
import httpx2
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from kata import data, datamove, steps
from kata.__main__ import main as kata_main
from launcher import control, databases
from monolith.app import create_app
from services.app import create_app as create_service
from services.settings import ServiceSettings
from shop.cart.models import CartLine
from shop.catalog import service as catalog
from shop.catalog.models import Category, Product
from shop.catalog.schemas import CategoryCreate, ProductCreate, ProductUpdate
from shop.identity.settings import IdentitySettings
from shop.inventory.models import StockItem
from shop.kernel.db import Database
from shop.kernel.migrations import CONTEXTS
from shop.kernel.topology import load
from shop.kernel.types import MoneyIn
from shop.orders.models import Order
from shop.payments.models import Payment
from tests import support
from tests.contract import helpers
from tests.contract.helpers import User

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
TEST_SECONDS = 180
"""No test here may take longer (the machines are slow; most take a few seconds)."""
EXPECTED_ROWS = {
    "identity_users": 3,
    "catalog_categories": 2,
    "catalog_products": 6,
    "inventory_items": 6,
    "inventory_reservations": 4,
    "cart_lines": 1,
    "orders_orders": 3,
    "orders_lines": 4,
    "payments_payments": 3,
    # The integration events of all that (the monolith drains its outboxes first: below).
    "catalog_outbox": 7,  # 6 products added, 1 deleted
    "inventory_outbox": 15,  # 6 stock updates; 3 reservations held, 2 committed, 1
    # released, 1 returned: 8 product moves
    "orders_outbox": 7,  # each order placed (3), confirmed (2), rejected (1), cancelled (1)
    "payments_outbox": 3,  # 2 captured, 1 refunded
    "catalog_inbox": 15,  # inventory's events, applied
    "catalog_stock_levels": 6,
    "cart_inbox": 7,  # catalog's events, applied
    "cart_products": 6,
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class ShopData:
    """The monolith's database and what was made in it through its API."""

    url: str
    key: str
    categories: list[dict[str, Any]]
    products: list[dict[str, Any]]
    customers: list[User]
    orders: list[dict[str, Any]]


async def drained(db: Database) -> None:
    """Wait (bounded) until every event recorded is published, and so applied."""
    outboxes = [
        table
        for context in CONTEXTS
        for table in datamove.tables_of(context)
        if table.name.endswith("_outbox")
    ]
    with anyio.fail_after(30):
        while True:
            async with db.reader() as session:
                pending = [
                    await session.scalar(
                        select(func.count())
                        .select_from(table)
                        .where(table.c.published_at.is_(None))
                    )
                    for table in outboxes
                ]
            if not any(pending):
                return
            await anyio.sleep(0.02)


async def fill_monolith(url: str) -> ShopData:
    """Migrate ``url`` and fill every context through the monolith's API, in process."""
    await support.migrate(url)
    key = support.monolith_settings(url).contexts(IdentitySettings).signing_key_pem
    assert key is not None
    pem = key.get_secret_value()
    app = create_app(support.monolith_settings(url, pem))
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://monolith.test", timeout=30
        ) as client,
    ):
        token = await helpers.login(client, support.ADMIN_EMAIL, support.ADMIN_PASSWORD)
        admin = User("", support.ADMIN_EMAIL, support.ADMIN_PASSWORD, "admin", token)
        categories = [
            await helpers.create_category(client, admin, "Tea ☕ & things"),
            await helpers.create_category(client, admin, "Kitchen"),
        ]
        products = []
        for index in range(6):
            product = await helpers.create_product(
                client,
                admin,
                categories[index % 2]["id"],
                price=1000 + 111 * index,
                name=f"Théière n°{index} «{'x' * index}»",
                description=f"Line one\nline two of product {index}",
            )
            await helpers.set_stock(client, admin, product["id"], 20 + index)
            products.append(product)
        helpers.expect_no_content(
            await client.delete(f"/products/{products[5]['id']}", headers=admin.headers)
        )
        ada, bob = await helpers.new_customers(client, 2)
        await helpers.put_cart_item(client, ada, products[0]["id"], 2)
        await helpers.put_cart_item(client, ada, products[1]["id"], 1)
        confirmed = helpers.expect(await helpers.checkout(client, ada), 201)
        assert confirmed["status"] == "confirmed", confirmed
        await helpers.put_cart_item(client, bob, products[2]["id"], 1)
        declined = await helpers.checkout(client, bob, helpers.order_body(helpers.DECLINED_CARD))
        helpers.assert_problem(declined, 402, "payment-declined")
        await helpers.put_cart_item(client, ada, products[3]["id"], 3)
        to_cancel = helpers.expect(await helpers.checkout(client, ada), 201)
        cancelled = helpers.expect(
            await client.post(f"/orders/{to_cancel['id']}/cancel", headers=ada.headers), 200
        )
        assert cancelled["status"] == "cancelled", cancelled
        orders = [confirmed, cancelled]
        await drained(app.state.database)
    return ShopData(url, pem, categories, products, [ada, bob], orders)


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[ShopData]:
    async with support.scratch_database(tmp_path) as url:
        with anyio.fail_after(TEST_SECONDS):
            filled = await fill_monolith(url)
        yield filled


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[str]:
    """An empty scratch database for a service."""
    async with support.scratch_database(tmp_path) as url:
        yield url


@pytest.fixture
async def deadline() -> AsyncIterator[None]:
    with anyio.fail_after(TEST_SECONDS):
        yield


class Lines:
    """Collects what a move prints."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


async def counts(url: str, names: list[str]) -> dict[str, int]:
    db = Database.connect(url)
    try:
        async with db.engine.connect() as conn:
            return {
                name: int((await conn.execute(text(f"SELECT COUNT(*) FROM {name}"))).scalar_one())  # noqa: S608
                for name in names
            }
    finally:
        await db.dispose()


async def states(url: str, context: str) -> datamove.Summary:
    db = Database.connect(url)
    try:
        async with db.engine.connect() as conn:
            return await datamove.summarize(conn, datamove.tables_of(context))
    finally:
        await db.dispose()


async def ledger_rows(url: str) -> list[str]:
    db = Database.connect(url)
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(text(f"SELECT context FROM {datamove.LEDGER_TABLE}"))  # noqa: S608
            return sorted(str(row[0]) for row in rows)
    finally:
        await db.dispose()


def names_of(context: str) -> list[str]:
    return [table.name for table in datamove.tables_of(context)]


# --------------------------------------------------------------------------- every context


async def test_every_context_moves_with_every_row(
    shop: ShopData, tmp_path: Path, deadline: None
) -> None:
    """All six contexts, each to its own database: counts, checksums, and the real values."""
    targets: dict[str, str] = {}
    try:
        for context in CONTEXTS:
            targets[context] = await support.create_scratch_database(tmp_path)
            printed = Lines()
            move = await datamove.move_context(
                context, source=shop.url, target=targets[context], batch_size=2, progress=printed
            )
            assert move.action == "moved", printed.text
            assert move.source == move.target
            for name in names_of(context):
                assert move.target[name].rows == EXPECTED_ROWS[name], (name, move.target)
                # independently of the move's own verification
                assert (await counts(targets[context], [name]))[name] == EXPECTED_ROWS[name]
                assert f"  {name}: {EXPECTED_ROWS[name]} rows copied" in printed.lines
            assert move.target == await states(shop.url, context), "the source changed"
            assert move.target == await states(targets[context], context)
            assert "DIFFERENT" not in printed.text
            assert "the source keeps its copy" in printed.text
            assert await ledger_rows(targets[context]) == [context]

        # Real values, read back through the contexts' own code on the services' databases.
        catalog_db = Database.connect(targets["catalog"])
        try:
            async with catalog_db.reader() as session:
                for made in shop.products:
                    product = await session.get(Product, made["id"])
                    assert product is not None
                    assert product.name == made["name"]
                    assert product.sku == made["sku"]
                    assert product.description == made["description"]
                    assert product.price_amount == made["price"]["amount"]
                    assert product.category_id == made["category_id"]
                    assert product.is_active is (made is not shop.products[5])
                    assert product.created_at == datetime.fromisoformat(made["created_at"])
                slugs = {c.slug for c in await catalog.list_categories(session)}
                assert slugs == {c["slug"] for c in shop.categories}
        finally:
            await catalog_db.dispose()

        for context, checks in {
            "inventory": select(StockItem.on_hand, StockItem.reserved).order_by(
                StockItem.product_id
            ),
            "orders": select(Order.status, Order.total_amount, Order.shipping_address),
            "payments": select(Payment.status),
            "cart": select(CartLine.quantity),
        }.items():
            db = Database.connect(targets[context])
            try:
                async with db.engine.connect() as conn:
                    rows = (await conn.execute(checks)).all()
            finally:
                await db.dispose()
            if context == "inventory":
                # 2 + 1 units sold for good; the cancelled order's 3 units came back.
                assert [tuple(r) for r in rows] == [
                    (18, 0),
                    (20, 0),
                    (22, 0),
                    (23, 0),
                    (24, 0),
                    (25, 0),
                ]
            elif context == "orders":
                assert sorted(r[0] for r in rows) == ["cancelled", "confirmed", "rejected"]
                confirmed = next(r for r in rows if r[0] == "confirmed")
                assert confirmed[1] == shop.orders[0]["total"]["amount"]
                assert confirmed[2] == shop.orders[0]["shipping_address"]
            elif context == "payments":
                assert sorted(r[0] for r in rows) == ["captured", "declined", "refunded"]
            else:
                assert [r[0] for r in rows] == [1]  # bob's line is still in his cart

        # The moved accounts log in on the identity service, on its own database.
        settings = ServiceSettings(
            database_url=targets["identity"],
            internal_token=SecretStr("test-internal-token"),
            topology=REPO / "topologies/services.toml",
            service_name="identity",
            recover_checkouts=False,
        ).with_contexts(support.identity_settings(shop.key))
        app = create_service(settings)
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url="http://identity.test"
            ) as client,
        ):
            for customer in shop.customers:
                token = await helpers.login(client, customer.email, customer.password)
                me = helpers.expect(
                    await client.get("/users/me", headers=helpers.bearer(token)), 200
                )
                assert me["id"] == customer.id
                assert me["email"] == customer.email
                assert me["name"] == customer.name
    finally:
        for url in targets.values():
            await support.drop_scratch_database(url)


@pytest.mark.postgres
@pytest.mark.skipif(
    support.postgres_server_url() is None, reason="needs TEST_DATABASE_URL (PostgreSQL)"
)
async def test_checksums_agree_between_sqlite_and_postgresql(
    tmp_path: Path, deadline: None
) -> None:
    """A SQLite monolith's rows moved to PostgreSQL services verify, and come back."""
    monolith = f"sqlite+aiosqlite:///{tmp_path / 'monolith.db'}"
    shop = await fill_monolith(monolith)
    targets: dict[str, str] = {}
    try:
        for context in CONTEXTS:
            targets[context] = await support.create_scratch_database(tmp_path)
            assert make_url(targets[context]).get_backend_name() == "postgresql"
            move = await datamove.move_context(
                context, source=shop.url, target=targets[context], progress=Lines()
            )
            assert move.action == "moved"
            assert await states(targets[context], context) == await states(monolith, context)
        await _new_product(targets["catalog"], "ON-POSTGRES")
        back = await datamove.move_back(
            "catalog", source=monolith, target=targets["catalog"], progress=Lines()
        )
        assert back.action == "moved back"
        assert await states(monolith, "catalog") == back.source
    finally:
        for url in targets.values():
            await support.drop_scratch_database(url)


# --------------------------------------------------------------------------- reruns


async def test_a_rerun_changes_nothing(shop: ShopData, target: str, deadline: None) -> None:
    first = await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    printed = Lines()
    again = await datamove.move_context("catalog", source=shop.url, target=target, progress=printed)
    assert again.action == "already moved"
    assert again.moved_at == first.moved_at
    assert again.warnings == ()
    assert f"already moved at {first.moved_at.isoformat()}" in printed.text  # type: ignore[union-attr]
    assert await states(target, "catalog") == first.target
    assert await ledger_rows(target) == ["catalog"]


async def test_a_rerun_warns_when_the_monolith_was_written_after_the_move(
    shop: ShopData, target: str, deadline: None
) -> None:
    await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    moved = await states(target, "catalog")
    db = Database.connect(shop.url)
    try:  # the monolith served catalog again (a rollback without --reverse) and took a write
        async with db.writer() as session, session.begin():
            await catalog.create_category(session, data=CategoryCreate(slug="late", name="Late"))
    finally:
        await db.dispose()
    printed = Lines()
    again = await datamove.move_context("catalog", source=shop.url, target=target, progress=printed)
    assert again.action == "already moved"
    assert len(again.warnings) == 1
    assert "WARNING" in again.warnings[0]
    assert "catalog_categories" in again.warnings[0]
    assert "catalog_products" not in again.warnings[0]
    assert again.warnings[0] in printed.lines
    assert await states(target, "catalog") == moved, "the target was changed"


async def test_a_target_with_the_same_rows_and_no_ledger_is_recorded(
    shop: ShopData, target: str, deadline: None
) -> None:
    moved = await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    db = Database.connect(target)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"DELETE FROM {datamove.LEDGER_TABLE}"))  # noqa: S608
    finally:
        await db.dispose()
    again = await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    assert again.action == "recorded"
    assert again.target == moved.target
    assert await ledger_rows(target) == ["catalog"]


async def _diverge(url: str) -> None:
    """The service took a write of its own: a category the monolith never had."""
    await support.migrate(url, ["catalog"])
    db = Database.connect(url)
    try:
        async with db.writer() as session, session.begin():
            await catalog.create_category(session, data=CategoryCreate(slug="own", name="Own"))
    finally:
        await db.dispose()


async def test_a_target_that_diverged_is_refused_and_untouched(
    shop: ShopData, target: str, deadline: None
) -> None:
    await _diverge(target)
    before = await states(target, "catalog")
    with pytest.raises(datamove.DataMoveError) as refused:
        await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    message = str(refused.value)
    differing = (
        "catalog_categories, catalog_inbox, catalog_outbox, catalog_stock_levels, catalog_products"
    )
    assert f"differing tables: {differing}" in message, message
    assert "Nothing was changed" in message
    assert "--replace" in message
    assert await states(target, "catalog") == before
    assert await ledger_rows(target) == []


async def test_replace_overwrites_a_diverged_target(
    shop: ShopData, target: str, deadline: None
) -> None:
    await _diverge(target)
    move = await datamove.move_context(
        "catalog", source=shop.url, target=target, replace=True, progress=Lines()
    )
    assert move.action == "replaced"
    assert await states(target, "catalog") == await states(shop.url, "catalog")
    assert (await counts(target, ["catalog_categories"]))["catalog_categories"] == 2
    assert await ledger_rows(target) == ["catalog"]


# --------------------------------------------------------------------------- failures


async def test_a_failure_mid_copy_leaves_the_target_unchanged(
    shop: ShopData, target: str, deadline: None
) -> None:
    async def explode(table: str, _conn: AsyncConnection) -> None:
        if table == "catalog_categories":
            raise RuntimeError("the disk is full (injected)")

    with pytest.raises(RuntimeError, match="injected"):
        await datamove.move_context(
            "catalog", source=shop.url, target=target, progress=Lines(), after_table=explode
        )
    assert await counts(target, names_of("catalog")) == dict.fromkeys(names_of("catalog"), 0)
    assert await ledger_rows(target) == []
    # ... and the move simply works afterwards.
    move = await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    assert move.action == "moved"


async def test_a_copy_that_does_not_verify_is_rolled_back(
    shop: ShopData, target: str, deadline: None
) -> None:
    async def tamper(table: str, conn: AsyncConnection) -> None:
        if table == "catalog_products":
            await conn.execute(update(Product).values(price_amount=1))

    with pytest.raises(datamove.DataMoveError) as mismatch:
        await datamove.move_context(
            "catalog", source=shop.url, target=target, progress=Lines(), after_table=tamper
        )
    message = str(mismatch.value)
    assert "does not match the source in catalog_products" in message, message
    assert "rolled back" in message
    assert "DIFFERENT" in message
    assert await counts(target, names_of("catalog")) == dict.fromkeys(names_of("catalog"), 0)
    assert await ledger_rows(target) == []


async def test_a_missing_source_is_a_clear_error_and_creates_nothing(
    tmp_path: Path, target: str, deadline: None
) -> None:
    server = support.postgres_server_url()
    if server is None:
        missing = f"sqlite+aiosqlite:///{tmp_path / 'nowhere' / 'monolith.db'}"
    else:
        missing = databases.service_urls(f"t{uuid.uuid4().hex[:10]}", ["monolith"], server)[
            "monolith"
        ]
    with pytest.raises(datamove.DataMoveError, match="does not exist: there is nothing to move"):
        await datamove.move_context("catalog", source=missing, target=target, progress=Lines())
    assert not (tmp_path / "nowhere").exists()


async def test_a_source_without_the_context_tables_is_a_clear_error(
    tmp_path: Path, target: str, deadline: None
) -> None:
    async with support.scratch_database(tmp_path) as source:
        await support.migrate(source, ["identity"])  # a database, but not the monolith's
        with pytest.raises(datamove.DataMoveError) as error:
            await datamove.move_context("catalog", source=source, target=target, progress=Lines())
        missing = ", ".join(names_of("catalog"))
        assert f"has no catalog tables ({missing} missing)" in str(error.value)
        with pytest.raises(datamove.DataMoveError, match="same database"):
            await datamove.move_context("identity", source=source, target=source, progress=Lines())
    with pytest.raises(datamove.DataMoveError, match="unknown context 'shipping'"):
        await datamove.move_context("shipping", source=target, target=target, progress=Lines())


# --------------------------------------------------------------------------- sequences


async def _new_product(url: str, sku: str) -> int:
    db = Database.connect(url)
    try:
        async with db.writer() as session, session.begin():
            category = await catalog.create_category(
                session, data=CategoryCreate(slug=f"c-{sku.lower()}", name=sku)
            )
            product = await catalog.create_product(
                session,
                data=ProductCreate(
                    sku=sku,
                    name=f"Made after the move {sku}",
                    description="",
                    category_id=category.id,
                    price=MoneyIn(amount=500, currency="EUR"),
                ),
            )
            return product.id
    finally:
        await db.dispose()


async def _highest(url: str, column: Any) -> int:
    db = Database.connect(url)
    try:
        async with db.engine.connect() as conn:
            return int((await conn.execute(select(func.max(column)))).scalar_one())
    finally:
        await db.dispose()


async def test_a_product_made_after_the_move_gets_a_new_id(
    shop: ShopData, target: str, deadline: None
) -> None:
    await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    highest = max(product["id"] for product in shop.products)
    assert await _highest(target, Product.id) == highest
    made = await _new_product(target, "AFTER-1")
    assert made > highest
    assert await _highest(target, Category.id) > max(c["id"] for c in shop.categories)


# --------------------------------------------------------------------------- the rollback


async def test_reverse_round_trips(shop: ShopData, target: str, deadline: None) -> None:
    await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    # The catalog service works on its rows: a new product, a new price.
    made = await _new_product(target, "SERVICE-1")
    db = Database.connect(target)
    try:
        async with db.writer() as session, session.begin():
            await catalog.update_product(
                session,
                product_id=shop.products[0]["id"],
                data=ProductUpdate(price=MoneyIn(amount=4242, currency="EUR")),
            )
    finally:
        await db.dispose()
    service_rows = await states(target, "catalog")

    printed = Lines()
    back = await datamove.move_back("catalog", source=shop.url, target=target, progress=printed)
    assert back.action == "moved back"
    assert await states(shop.url, "catalog") == service_rows, "the monolith lacks the rows"
    assert await counts(target, names_of("catalog")) == dict.fromkeys(names_of("catalog"), 0)
    assert await ledger_rows(target) == []
    assert "moved back and verified" in printed.text
    db = Database.connect(shop.url)
    try:
        async with db.reader() as session:
            product = await catalog.get_product(session, product_id=shop.products[0]["id"])
            assert product.price_amount == 4242
            assert (await catalog.get_product(session, product_id=made)).sku == "SERVICE-1"
    finally:
        await db.dispose()
    # The monolith's own next product comes after the service's (its sequence moved too).
    assert await _new_product(shop.url, "MONOLITH-2") > made

    # Reversing again changes nothing: the service has nothing left to give back.
    monolith_rows = await states(shop.url, "catalog")
    again = await datamove.move_back("catalog", source=shop.url, target=target, progress=Lines())
    assert again.action == "nothing to move back"
    assert await states(shop.url, "catalog") == monolith_rows
    # And forward again, as a later step does.
    forward = await datamove.move_context(
        "catalog", source=shop.url, target=target, progress=Lines()
    )
    assert forward.action == "moved"
    assert await states(target, "catalog") == await states(shop.url, "catalog")


async def test_reverse_refuses_a_monolith_copy_written_since_the_move(
    shop: ShopData, target: str, deadline: None
) -> None:
    await datamove.move_context("catalog", source=shop.url, target=target, progress=Lines())
    await _new_product(target, "SERVICE-1")
    await _new_product(shop.url, "MONOLITH-1")  # someone wrote to the monolith's copy
    monolith_rows = await states(shop.url, "catalog")
    service_rows = await states(target, "catalog")
    with pytest.raises(datamove.DataMoveError) as refused:
        await datamove.move_back("catalog", source=shop.url, target=target, progress=Lines())
    message = str(refused.value)
    assert "the monolith's copy changed since the move" in message, message
    assert "--replace" in message
    assert await states(shop.url, "catalog") == monolith_rows
    assert await states(target, "catalog") == service_rows
    assert await ledger_rows(target) == ["catalog"]

    await datamove.move_back(
        "catalog", source=shop.url, target=target, replace=True, progress=Lines()
    )
    assert await states(shop.url, "catalog") == service_rows
    assert await ledger_rows(target) == []


# --------------------------------------------------------------------------- the command


def _kata(*argv: str) -> int:
    return kata_main(["migrate-data", *argv])


@dataclass(frozen=True)
class Layout:
    """The launcher's databases of one data name: what `make up STEP=n` runs on."""

    database: str
    data: str
    folder: Path

    def args(self) -> list[str]:
        return ["--database", self.database, "--data", self.data, "--data-dir", str(self.folder)]

    def url(self, service: str) -> str:
        return databases.service_urls(self.data, [service], self.database, folder=self.folder)[
            service
        ]


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    server = support.postgres_server_url()
    made = Layout(server or "sqlite", f"kt{uuid.uuid4().hex[:10]}", tmp_path / "kata")
    made.folder.mkdir()
    try:
        yield made
    finally:
        if server is not None:
            names = [databases.database_name(made.data, s) for s in ("monolith", *CONTEXTS)]
            asyncio.run(_drop(server, names))


async def _drop(server: str, names: list[str]) -> None:
    conn = await asyncpg.connect(make_url(server).set(drivername="postgresql").render_as_string())
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def test_the_command_refuses_while_a_launcher_runs_on_the_data(
    layout: Layout,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    work: Path,
) -> None:
    monolith = layout.url("monolith")
    if support.postgres_server_url() is not None:
        asyncio.run(databases.ensure_postgres_databases_async(layout.database, {"m": monolith}))
    asyncio.run(asyncio.wait_for(fill_monolith(monolith), TEST_SECONDS))
    monkeypatch.chdir(work)  # a short path: a unix socket's holds about 100 bytes
    path = control.socket_path(layout.data)
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))  # what `python -m launcher up --data <name>` listens on
        listener.listen()
        assert _kata("--step", "2", *layout.args()) == 1
        out, err = capsys.readouterr()
        assert err.startswith("error: a deployment runs on these databases"), err
        assert f"python -m launcher down --data {layout.data}" in err
        assert "copied" not in out, out  # refused before anything moved
    path.unlink()
    assert _kata("--step", "2", *layout.args()) == 0
    assert "moved and verified" in capsys.readouterr().out


def test_the_command_moves_a_step_on_the_launchers_databases(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    monolith = layout.url("monolith")
    if support.postgres_server_url() is not None:
        asyncio.run(databases.ensure_postgres_databases_async(layout.database, {"m": monolith}))
    asyncio.run(asyncio.wait_for(fill_monolith(monolith), TEST_SECONDS))
    # The step's databases are the launcher's: the same function names them.
    topology = load(REPO / steps.step(2).topology)
    launcher_urls = databases.service_urls(
        layout.data, topology.services, layout.database, folder=layout.folder
    )
    assert data.step_urls(2, layout.database, data=layout.data, folder=layout.folder) == {
        "catalog": (launcher_urls["monolith"], launcher_urls["catalog"])
    }

    assert _kata("--step", "2", *layout.args()) == 0
    out = capsys.readouterr().out
    assert "catalog_products: 6 rows copied" in out, out
    assert "moved and verified" in out
    assert "the rollback point" in out
    assert asyncio.run(ledger_rows(layout.url("catalog"))) == ["catalog"]

    assert _kata("--step", "2", *layout.args()) == 0
    assert "already moved at" in capsys.readouterr().out

    assert _kata("--step", "1", *layout.args()) == 0
    assert "extracts no context" in capsys.readouterr().out

    assert _kata("--step", "2", "--reverse", *layout.args()) == 0
    assert "moved back and verified" in capsys.readouterr().out
    assert asyncio.run(ledger_rows(layout.url("catalog"))) == []

    # A diverged service database is refused with a non-zero exit and the reason.
    asyncio.run(_diverge(layout.url("catalog")))
    assert _kata("--step", "2", *layout.args()) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: catalog: the target already holds other catalog rows"), err
    assert "Traceback" not in err
    assert _kata("--step", "2", "--replace", *layout.args()) == 0
    assert "replaced and verified" in capsys.readouterr().out

    # A jump to step 4 moves what steps 2-4 extract; what moved already stays as it is.
    assert _kata("--step", "4", "--up-to", *layout.args()) == 0
    out = capsys.readouterr().out
    assert "catalog: already moved at" in out, out
    assert "  identity_users: 3 rows copied" in out, out
    assert "  inventory_items: 6 rows copied" in out, out
    assert out.index("catalog:") < out.index("identity:") < out.index("inventory:")
    for context in ("identity", "inventory"):
        assert asyncio.run(ledger_rows(layout.url(context))) == [context]


def test_bad_input_is_a_clear_error(layout: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    explicit = ["--context", "catalog", "--source", "sqlite:///a.db", "--target", "sqlite:///b.db"]
    cases: list[tuple[list[str], int, str]] = [
        (["--step", "9"], 1, "STEP must be a number from 0 to 7, got '9'"),
        (["--step", "two"], 1, "STEP must be a number from 0 to 7"),
        ([], 2, "give --step N, or all of --context, --source and --target"),
        (["--context", "catalog", "--source", "sqlite:///x.db"], 2, "give --step N"),
        (["--step", "2", "--context", "catalog"], 2, "cannot be combined"),
        (["--step", "2", "--database", "mysql"], 1, "--database must be sqlite, postgres"),
        (["--step", "2", "--data", "../etc"], 1, "a data name is letters"),
        (
            ["--context", "shipping", "--source", "sqlite:///a.db", "--target", "sqlite:///b.db"],
            1,
            "unknown context 'shipping'",
        ),
        (
            ["--context", "catalog", "--source", "mysql://x/y", "--target", "sqlite:///b.db"],
            1,
            "the source database URL 'mysql://x/y' is not usable",
        ),
        (["--step", "3", "--reverse", "--up-to"], 2, "--up-to is for forward moves only"),
        ([*explicit, "--up-to"], 2, "--up-to goes with --step"),
        # The monolith's database does not exist: an error, or nothing to do for `make up`.
        (["--step", "2", *layout.args()], 1, "does not exist: there is nothing to move"),
    ]
    for argv, code, message in cases:
        assert _kata(*argv) == code, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err
    assert _kata("--step", "3", "--up-to", "--if-present", *layout.args()) == 0
    out = capsys.readouterr().out
    assert "catalog: " in out
    assert "identity: " in out
    assert out.count("a fresh start): nothing to move") == 2, out
    assert list(layout.folder.iterdir()) == [], "a database was created"
    # Going back (make up to an earlier step) when the service never ran: nothing to move.
    assert _kata("--step", "4", "--reverse", "--if-present", *layout.args()) == 0
    out = capsys.readouterr().out
    assert "inventory: " in out, out
    assert "does not exist: nothing to move back" in out, out
    assert list(layout.folder.iterdir()) == [], "a database was created"
    with pytest.raises(SystemExit) as usage:
        _kata("--batch-size", "0")
    assert usage.value.code == 2
    assert "must be a whole number of at least 1" in capsys.readouterr().err


def test_help_says_the_monolith_keeps_its_copy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _kata("--help")
    out = capsys.readouterr().out
    assert "The monolith's copy stays in place after a forward move" in out
    assert "--reverse" in out
    assert "var/kata/monolith.db" in out
    assert data.__doc__ is not None
    assert "The monolith's copy stays in place after a forward move" in data.__doc__
