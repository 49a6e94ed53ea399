"""Cart: pricing a cart through a fake catalog, and the rules of setting a line.

The cart's own table lives in a private SQLite file; the catalog is an in-memory fake.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Collection

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.cart import repository, service
from shop.cart.exceptions import CartFull, ProductNotFound
from shop.cart.ports import CatalogEntry
from shop.cart.schemas import CartItemUpdate, CartRead
from shop.kernel.db import Database
from shop.kernel.types import SHOP_CURRENCY, Money
from tests.unit.conftest import MakeDatabase

pytestmark = pytest.mark.anyio


class FakeCatalog:
    """Products the shop still sells; deleting one makes it vanish from ``entries``."""

    def __init__(self) -> None:
        self.products: dict[int, CatalogEntry] = {}
        self.asked: list[list[int]] = []

    def add(self, product_id: int, name: str, amount: int, currency: str = "EUR") -> None:
        self.products[product_id] = CatalogEntry(
            product_id=product_id, name=name, price=Money(amount=amount, currency=currency)
        )

    def delete(self, product_id: int) -> None:
        del self.products[product_id]

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        self.asked.append(sorted(product_ids))
        return {p: self.products[p] for p in product_ids if p in self.products}


@pytest.fixture
async def db(make_database: MakeDatabase) -> Database:
    return await make_database(["cart"])


@pytest.fixture
async def session(db: Database) -> AsyncIterator[AsyncSession]:
    async with db.writer() as session, session.begin():
        yield session


@pytest.fixture
def catalog() -> FakeCatalog:
    fake = FakeCatalog()
    fake.add(1, "Teapot", 1_999)
    fake.add(2, "Cup", 350)
    fake.add(3, "Saucer", 125)
    return fake


async def put(
    session: AsyncSession,
    catalog: FakeCatalog,
    user_id: uuid.UUID,
    product_id: int,
    quantity: int,
    *,
    max_lines: int = 100,
) -> None:
    await service.update_line(
        session,
        user_id=user_id,
        product_id=product_id,
        quantity=quantity,
        catalog=catalog,
        max_lines=max_lines,
    )


async def cart_of(session: AsyncSession, user_id: uuid.UUID, catalog: FakeCatalog) -> CartRead:
    """The cart as ``get_cart`` prices it, read inside the test's transaction."""
    return await service.price(await service.list_lines(session, user_id=user_id), catalog)


async def test_an_empty_cart_is_zero_in_the_shop_currency(
    session: AsyncSession, catalog: FakeCatalog
) -> None:
    cart = await cart_of(session, uuid.uuid4(), catalog)

    assert cart.items == []
    assert cart.total == Money(amount=0, currency=SHOP_CURRENCY)
    assert cart.item_count == 0


async def test_get_cart_prices_every_line_now(session: AsyncSession, catalog: FakeCatalog) -> None:
    user = uuid.uuid4()
    await put(session, catalog, user, 1, 2)
    await put(session, catalog, user, 2, 3)
    await put(session, catalog, user, 3, 1)
    catalog.add(2, "Big cup", 400)  # the price changed after the cup was added

    cart = await cart_of(session, user, catalog)

    assert [(i.product_id, i.name, i.quantity) for i in cart.items] == [
        (1, "Teapot", 2),
        (2, "Big cup", 3),
        (3, "Saucer", 1),
    ]
    assert [i.unit_price.amount for i in cart.items] == [1_999, 400, 125]
    assert [i.line_total.amount for i in cart.items] == [3_998, 1_200, 125]
    assert all(i.line_total.currency == "EUR" for i in cart.items)
    assert cart.total == Money(amount=3_998 + 1_200 + 125, currency="EUR")
    assert cart.item_count == 6


async def test_deleted_products_vanish_from_the_cart_and_its_totals(
    session: AsyncSession, catalog: FakeCatalog
) -> None:
    user = uuid.uuid4()
    await put(session, catalog, user, 1, 2)
    await put(session, catalog, user, 2, 5)
    catalog.delete(1)

    cart = await cart_of(session, user, catalog)

    assert [i.product_id for i in cart.items] == [2]
    assert cart.total == Money(amount=5 * 350, currency="EUR")
    assert cart.item_count == 5


async def test_a_cart_of_deleted_products_only_is_empty(
    session: AsyncSession, catalog: FakeCatalog
) -> None:
    user = uuid.uuid4()
    await put(session, catalog, user, 1, 2)
    catalog.delete(1)

    cart = await cart_of(session, user, catalog)

    assert cart.items == []
    assert cart.total == Money(amount=0, currency="EUR")
    assert cart.item_count == 0


async def test_carts_are_per_user(session: AsyncSession, catalog: FakeCatalog) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await put(session, catalog, alice, 1, 1)
    await put(session, catalog, bob, 2, 4)

    cart = await cart_of(session, alice, catalog)

    assert [(i.product_id, i.quantity) for i in cart.items] == [(1, 1)]


async def test_update_line_sets_rather_than_adds_the_quantity(
    session: AsyncSession, catalog: FakeCatalog
) -> None:
    user = uuid.uuid4()
    await put(session, catalog, user, 1, 5)
    await put(session, catalog, user, 1, 2)

    lines = await service.list_lines(session, user_id=user)

    assert [(line.product_id, line.quantity) for line in lines] == [(1, 2)]


async def test_update_line_of_an_unknown_product_is_product_not_found(
    session: AsyncSession, catalog: FakeCatalog
) -> None:
    user = uuid.uuid4()
    catalog.add(4, "Spoon", 99)
    catalog.delete(4)

    for product_id in (4, 404):
        with pytest.raises(ProductNotFound):
            await put(session, catalog, user, product_id, 1)

    assert await repository.list_lines(session, user) == []


async def test_a_full_cart_refuses_a_new_line_but_still_changes_its_own(
    session: AsyncSession, catalog: FakeCatalog
) -> None:
    user = uuid.uuid4()
    await put(session, catalog, user, 1, 1, max_lines=2)
    await put(session, catalog, user, 2, 1, max_lines=2)

    with pytest.raises(CartFull):
        await put(session, catalog, user, 3, 1, max_lines=2)
    await put(session, catalog, user, 2, 7, max_lines=2)

    lines = await service.list_lines(session, user_id=user)
    assert [(line.product_id, line.quantity) for line in lines] == [(1, 1), (2, 7)]


async def test_lines_of_deleted_products_do_not_count_against_a_full_cart(
    session: AsyncSession, catalog: FakeCatalog
) -> None:
    """A deleted product disappears from carts (docs/api.md), so it cannot fill one."""
    user = uuid.uuid4()
    await put(session, catalog, user, 1, 1, max_lines=2)
    await put(session, catalog, user, 2, 1, max_lines=2)
    catalog.delete(1)
    shown = await cart_of(session, user, catalog)
    assert len(shown.items) == 1

    await put(session, catalog, user, 3, 1, max_lines=2)

    cart = await cart_of(session, user, catalog)
    assert [i.product_id for i in cart.items] == [2, 3]


async def test_delete_items_removes_the_given_lines_or_all(
    session: AsyncSession, catalog: FakeCatalog
) -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    for product_id in (1, 2, 3):
        await put(session, catalog, user, product_id, 1)
    await put(session, catalog, other, 1, 1)

    await service.delete_items(session, user_id=user, product_ids=[2, 404])
    assert [line.product_id for line in await service.list_lines(session, user_id=user)] == [1, 3]

    await service.delete_items(session, user_id=user)
    assert await service.list_lines(session, user_id=user) == []
    assert len(await repository.list_lines(session, other)) == 1


@pytest.mark.parametrize("quantity", [0, -1, 1001, 1.5, None, "many"])
def test_a_cart_quantity_is_1_to_1000(quantity: object) -> None:
    with pytest.raises(ValidationError):
        CartItemUpdate.model_validate({"quantity": quantity})


def test_a_cart_update_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        CartItemUpdate.model_validate({"quantity": 1, "price": 0})
    assert CartItemUpdate.model_validate({"quantity": 1000}).quantity == 1000


async def test_a_catalog_snapshot_asks_about_each_product_once(catalog: FakeCatalog) -> None:
    snapshot = service.CatalogSnapshot(catalog)
    assert set(await snapshot.entries([1, 404])) == {1}
    catalog.delete(1)  # the snapshot keeps the answers it had, absence included
    assert set(await snapshot.entries([1, 2, 404])) == {1, 2}
    assert catalog.asked == [[1, 404], [2]]
    assert await snapshot.entries([]) == {}


class LockProbingCatalog(FakeCatalog):
    """A catalog that, whenever it is asked, checks that no transaction holds the SQLite
    database's write lock (a remote catalog call must never run inside a cart write), and
    how many of the cart database's connections are checked out (none: the cart's session
    is closed before the catalog is asked)."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        path = db.engine.url.database
        assert path is not None
        self.db = db
        self.url = path
        self.lock_held: list[bool] = []
        self.connections_out: list[int] = []

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        self.connections_out.append(self.db.engine.pool.checkedout())  # type: ignore[attr-defined]
        probe = sqlite3.connect(self.url, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            self.lock_held.append(False)
        except sqlite3.OperationalError:  # "database is locked"
            self.lock_held.append(True)
        finally:
            probe.close()
        return await super().entries(product_ids)


async def test_the_cart_asks_the_catalog_outside_its_sessions(db: Database) -> None:
    catalog = LockProbingCatalog(db)
    catalog.add(1, "Teapot", 1_999)
    catalog.add(2, "Cup", 350)
    user = uuid.uuid4()

    async def put_item(product_id: int, quantity: int) -> CartRead:
        return await service.update_item(
            db, user_id=user, product_id=product_id, quantity=quantity, catalog=catalog, max_lines=2
        )

    await put_item(1, 2)
    cart = await put_item(2, 1)
    assert [(i.product_id, i.quantity) for i in cart.items] == [(1, 2), (2, 1)]
    assert cart.total.amount == 2 * 1_999 + 350
    assert await service.get_cart(db, user_id=user, catalog=catalog) == cart
    catalog.delete(1)
    cart = await service.delete_item(db, user_id=user, product_id=2, catalog=catalog)
    assert cart.items == []
    with pytest.raises(ProductNotFound):
        await put_item(404, 1)
    catalog.add(3, "Saucer", 125)
    catalog.add(4, "Spoon", 99)
    await put_item(3, 1)  # the deleted product's line is dropped, so this one fits
    cart = await put_item(4, 1)
    assert [i.product_id for i in cart.items] == [3, 4]
    with pytest.raises(CartFull):
        await put_item(2, 1)
    assert len(catalog.lock_held) >= 6
    assert not any(catalog.lock_held), catalog.lock_held
    assert catalog.connections_out == [0] * len(catalog.lock_held)
