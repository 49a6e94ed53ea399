"""Catalog on a real database: the product view asks inventory (the monolith's in-process
adapter, on the same database) only once its own session is closed."""

from __future__ import annotations

import uuid
from collections.abc import Collection

import pytest

from bindings.inprocess import InventoryStockLevels
from shop.catalog import service as catalog
from shop.catalog.exceptions import ProductNotFound
from shop.catalog.schemas import CategoryCreate, ProductCreate
from shop.inventory import service as inventory
from shop.kernel.db import Database
from shop.kernel.types import MoneyIn
from tests.integration.conftest import Connect

pytestmark = pytest.mark.anyio


class ProbedStock:
    """Inventory's answer through ``inner``, noting how many connections of the shared
    database are checked out whenever catalog asks."""

    def __init__(self, db: Database, inner: InventoryStockLevels) -> None:
        self.db = db
        self.inner = inner
        self.connections_out: list[int] = []

    async def available(self, product_ids: Collection[int]) -> dict[int, int]:
        self.connections_out.append(self.db.engine.pool.checkedout())  # type: ignore[attr-defined]
        return await self.inner.available(product_ids)


@pytest.fixture
async def db(connect: Connect) -> Database:
    return await connect(["catalog", "inventory"])


async def add_product(db: Database, on_hand: int, reserved: int) -> int:
    async with db.writer() as session, session.begin():
        category = await catalog.create_category(
            session, data=CategoryCreate(slug="pots", name="Pots")
        )
        product = await catalog.create_product(
            session,
            data=ProductCreate(
                sku="POT-1",
                name="Teapot",
                category_id=category.id,
                price=MoneyIn(amount=1_999, currency="EUR"),
            ),
        )
        await inventory.update_stock(session, product_id=product.id, on_hand=on_hand)
        await inventory.create_reservation(
            session, reservation_id=uuid.uuid4(), lines=[(product.id, reserved)]
        )
    return product.id


async def test_the_product_view_asks_inventory_once_its_session_is_closed(db: Database) -> None:
    product_id = await add_product(db, on_hand=5, reserved=2)
    stock = ProbedStock(db, InventoryStockLevels(db))

    view = await catalog.get_product_view(db, product_id=product_id, stock=stock)

    assert (view.id, view.name, view.price.amount, view.available) == (
        product_id,
        "Teapot",
        1_999,
        3,
    )
    assert stock.connections_out == [0]
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_an_unknown_product_is_not_found_without_asking_inventory(db: Database) -> None:
    stock = ProbedStock(db, InventoryStockLevels(db))

    with pytest.raises(ProductNotFound):
        await catalog.get_product_view(db, product_id=404, stock=stock)

    assert stock.connections_out == []
