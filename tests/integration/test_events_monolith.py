"""The monolith end to end, in process (``tests.targets.monolith``): changes made through
the public API reach the other contexts' read models over the in-process bus, and every
outbox drains.

Read models are eventually consistent: each check polls, within a bounded wait, never
sleeping a fixed time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest
from sqlalchemy import func, select

from shop.cart.models import products as cart_products
from shop.catalog.models import outbox as catalog_outbox
from shop.catalog.models import stock_levels
from shop.inventory.models import outbox as inventory_outbox
from shop.kernel.db import Database
from shop.orders.models import outbox as orders_outbox
from shop.payments.models import outbox as payments_outbox
from tests import targets
from tests.contract import helpers

pytestmark = pytest.mark.anyio

WAIT_SECONDS = 10.0
"""The most a read model may take to catch up here (it takes milliseconds)."""
OUTBOXES = (inventory_outbox, catalog_outbox, orders_outbox, payments_outbox)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Return once ``check()`` holds; fail if it does not within :data:`WAIT_SECONDS`."""
    try:
        with anyio.fail_after(WAIT_SECONDS):
            while True:
                if await check():
                    return
                await anyio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT_SECONDS} s: {what}") from None


class Monolith:
    def __init__(self, client: httpx2.AsyncClient, db: Database, admin: helpers.User) -> None:
        self.client = client
        self.db = db
        self.admin = admin

    async def stock_level(self, product_id: int) -> tuple[int, int, int] | None:
        async with self.db.reader() as session:
            row = (
                await session.execute(
                    select(
                        stock_levels.c.on_hand, stock_levels.c.reserved, stock_levels.c.available
                    ).where(stock_levels.c.product_id == product_id)
                )
            ).one_or_none()
        return None if row is None else (row[0], row[1], row[2])

    async def cart_product(self, product_id: int) -> tuple[Any, ...] | None:
        async with self.db.reader() as session:
            row = (
                await session.execute(
                    select(
                        cart_products.c.name,
                        cart_products.c.price_amount,
                        cart_products.c.currency,
                        cart_products.c.deleted,
                    ).where(cart_products.c.product_id == product_id)
                )
            ).one_or_none()
        return None if row is None else tuple(row)

    async def unpublished(self) -> int:
        async with self.db.reader() as session:
            counts = [
                await session.scalar(
                    select(func.count()).select_from(table).where(table.c.published_at.is_(None))
                )
                for table in OUTBOXES
            ]
        return sum(int(count or 0) for count in counts)

    async def recorded(self) -> int:
        async with self.db.reader() as session:
            counts = [
                await session.scalar(select(func.count()).select_from(table)) for table in OUTBOXES
            ]
        return sum(int(count or 0) for count in counts)

    async def stock_reaches(self, product_id: int, numbers: tuple[int, int, int]) -> None:
        async def check() -> bool:
            return await self.stock_level(product_id) == numbers

        await eventually(check, f"catalog's stock level of {product_id} is {numbers}")

    async def drained(self) -> None:
        async def check() -> bool:
            return await self.unpublished() == 0

        await eventually(check, "every outbox row published")


@pytest.fixture
async def shop() -> AsyncIterator[Monolith]:
    async with targets.monolith() as target:
        transport = target["transport"]
        assert isinstance(transport, httpx2.ASGITransport)
        db = transport.app.state.database  # type: ignore[attr-defined]
        assert isinstance(db, Database)
        async with httpx2.AsyncClient(transport=transport, base_url=target["base_url"]) as client:
            token = await helpers.login(client, target["admin_email"], target["admin_password"])
            admin = helpers.User(
                id="", email=target["admin_email"], password="", name="", token=token
            )
            yield Monolith(client, db, admin)


async def test_a_stock_update_reaches_catalogs_read_model_and_the_outbox_drains(
    shop: Monolith,
) -> None:
    client, admin = shop.client, shop.admin
    category = await helpers.create_category(client, admin)
    product = await helpers.create_product(client, admin, category["id"], price=1_250)
    product_id = product["id"]

    await helpers.set_stock(client, admin, product_id, 7)

    await shop.stock_reaches(product_id, (7, 0, 7))

    await helpers.set_stock(client, admin, product_id, 3)

    await shop.stock_reaches(product_id, (3, 0, 3))
    await shop.drained()
    assert await shop.recorded() >= 3  # the product, then two stock updates


async def test_a_checkout_moves_the_read_models_and_every_outbox_drains(shop: Monolith) -> None:
    client, admin = shop.client, shop.admin
    product = await helpers.stocked_product(client, admin, price=800, on_hand=5)
    product_id = product["id"]

    async def cart_knows() -> bool:
        return await shop.cart_product(product_id) == (product["name"], 800, "EUR", False)

    await eventually(cart_knows, "the cart's read model has the product")
    customer = await helpers.new_customer(client)
    await helpers.put_cart_item(client, customer, product_id, 2)

    order = helpers.expect(await helpers.checkout(client, customer), 201)

    assert order["status"] == "confirmed"
    await shop.stock_reaches(product_id, (3, 0, 3))
    await shop.drained()

    rename = await client.patch(
        f"/products/{product_id}", json={"name": "Renamed"}, headers=admin.headers
    )
    helpers.expect(rename, 200)
    helpers.expect_no_content(await client.delete(f"/products/{product_id}", headers=admin.headers))

    async def cart_forgets() -> bool:
        return await shop.cart_product(product_id) == ("Renamed", 800, "EUR", True)

    await eventually(cart_forgets, "the cart's read model marks the product deleted")
    await shop.drained()
