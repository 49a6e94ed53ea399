"""Stock levels: admin sets on_hand, everybody sees on_hand / reserved / available."""

from __future__ import annotations

import httpx2
import pytest

from tests.contract.helpers import (
    User,
    assert_problem,
    assert_stock,
    assert_unauthorized,
    assert_validation_error,
    create_category,
    create_product,
    expect,
    get_stock,
    new_customer,
    product_available,
    set_stock,
)

pytestmark = pytest.mark.anyio

MAX_ID = 2**31 - 1


async def test_inventory_is_not_found_before_stock_is_set(
    client: httpx2.AsyncClient, admin: User
) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    resp = await client.get(f"/inventory/{product['id']}", headers=admin.headers)
    assert_problem(resp, 404, "inventory-item-not-found")


async def test_admin_sets_and_resets_stock(client: httpx2.AsyncClient, admin: User) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    pid = product["id"]

    item = await set_stock(client, admin, pid, 12)
    assert item == {"product_id": pid, "on_hand": 12, "reserved": 0, "available": 12}
    await assert_stock(client, admin, pid, on_hand=12)

    item = await set_stock(client, admin, pid, 0)
    assert item == {"product_id": pid, "on_hand": 0, "reserved": 0, "available": 0}
    await assert_stock(client, admin, pid, on_hand=0)
    assert await product_available(client, pid, 0) == 0


async def test_customer_can_read_but_not_set_stock(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    pid = product["id"]
    await set_stock(client, admin, pid, 4)

    resp = await client.put(f"/inventory/{pid}", json={"on_hand": 99}, headers=customer.headers)
    assert_problem(resp, 403, "forbidden")
    assert_unauthorized(await client.put(f"/inventory/{pid}", json={"on_hand": 99}))
    assert (await get_stock(client, admin, pid))["on_hand"] == 4
    assert expect(await client.get(f"/inventory/{pid}", headers=customer.headers), 200) == {
        "product_id": pid,
        "on_hand": 4,
        "reserved": 0,
        "available": 4,
    }


async def test_set_stock_of_unknown_product(client: httpx2.AsyncClient, admin: User) -> None:
    resp = await client.put(f"/inventory/{MAX_ID}", json={"on_hand": 1}, headers=admin.headers)
    assert_problem(resp, 404, "product-not-found")


@pytest.mark.parametrize(
    "body",
    [{"on_hand": -1}, {"on_hand": 1.5}, {"on_hand": "many"}, {}, {"on_hand": 3, "reserved": 0}],
    ids=["negative", "float", "text", "missing", "reserved-field"],
)
async def test_set_stock_rejects_invalid_bodies(
    client: httpx2.AsyncClient, admin: User, body: dict[str, object]
) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    await set_stock(client, admin, product["id"], 5)
    resp = await client.put(f"/inventory/{product['id']}", json=body, headers=admin.headers)
    assert_validation_error(resp)
    await assert_stock(client, admin, product["id"], on_hand=5)


@pytest.mark.parametrize("bad_id", ["0", "-1", str(2**31), "abc"])
async def test_inventory_ids_out_of_range(
    client: httpx2.AsyncClient, admin: User, bad_id: str
) -> None:
    assert_validation_error(await client.get(f"/inventory/{bad_id}", headers=admin.headers))
    resp = await client.put(f"/inventory/{bad_id}", json={"on_hand": 1}, headers=admin.headers)
    assert_validation_error(resp)


async def test_on_hand_is_a_whole_number(client: httpx2.AsyncClient, admin: User) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    pid = product["id"]
    await set_stock(client, admin, pid, 2)

    for bad in ("5", True):
        resp = await client.put(f"/inventory/{pid}", json={"on_hand": bad}, headers=admin.headers)
        assert_validation_error(resp)
    await assert_stock(client, admin, pid, on_hand=2)

    resp = await client.put(f"/inventory/{pid}", json={"on_hand": 5.0}, headers=admin.headers)
    item = expect(resp, 200)
    assert item == {"product_id": pid, "on_hand": 5, "reserved": 0, "available": 5}
