"""Cart on a real database: concurrent requests on one cart keep its rules."""

from __future__ import annotations

import uuid
from collections.abc import Collection

import anyio
import pytest

from shop.cart import repository, service
from shop.cart.exceptions import CartFull
from shop.cart.ports import CatalogEntry
from shop.kernel.db import Database
from shop.kernel.types import Money
from tests.integration.conftest import Connect

pytestmark = pytest.mark.anyio
MAX_LINES = 3


class Catalog:
    """Every product id is sold, at 1.00 EUR."""

    async def entries(self, product_ids: Collection[int]) -> dict[int, CatalogEntry]:
        price = Money(amount=100, currency="EUR")
        return {p: CatalogEntry(product_id=p, name=f"P{p}", price=price) for p in product_ids}


@pytest.fixture
async def db(connect: Connect) -> Database:
    return await connect(["cart"])


async def put(db: Database, user_id: uuid.UUID, product_id: int, quantity: int = 1) -> None:
    async with db.writer() as session, session.begin():
        await service.update_line(
            session,
            user_id=user_id,
            product_id=product_id,
            quantity=quantity,
            catalog=Catalog(),
            max_lines=MAX_LINES,
        )


async def line_count(db: Database, user_id: uuid.UUID) -> int:
    async with db.reader() as session:
        return len(await repository.list_lines(session, user_id))


async def test_concurrent_new_lines_never_overfill_a_cart(db: Database) -> None:
    user = uuid.uuid4()
    for product_id in range(1, MAX_LINES):
        await put(db, user, product_id)
    added: list[int] = []
    refused: list[int] = []

    async def attempt(product_id: int) -> None:
        try:
            await put(db, user, product_id)
        except CartFull:
            refused.append(product_id)
        else:
            added.append(product_id)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for product_id in range(100, 110):
                tasks.start_soon(attempt, product_id)

    assert len(added) == 1
    assert len(refused) == 9
    assert await line_count(db, user) == MAX_LINES


async def test_concurrent_puts_of_one_product_make_one_line(db: Database) -> None:
    user = uuid.uuid4()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for quantity in range(1, 11):
                tasks.start_soon(put, db, user, 7, quantity)

    async with db.reader() as session:
        lines = await service.list_lines(session, user_id=user)
    assert [line.product_id for line in lines] == [7]
    assert 1 <= lines[0].quantity <= 10
