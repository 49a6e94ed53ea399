"""The caller's cart: lines, arithmetic, validation and privacy."""

from __future__ import annotations

import httpx2
import pytest

from tests.contract.helpers import (
    JSON,
    User,
    assert_money,
    assert_problem,
    assert_unauthorized,
    assert_validation_error,
    create_category,
    create_product,
    eventually,
    expect,
    expect_no_content,
    get_cart,
    new_customer,
    put_cart_item,
)

pytestmark = pytest.mark.anyio

MAX_ID = 2**31 - 1


def _lines(cart: JSON) -> dict[int, JSON]:
    return {line["product_id"]: line for line in cart["items"]}


def _assert_empty(cart: JSON) -> None:
    assert cart["items"] == []
    assert_money(cart["total"], 0)
    assert cart["item_count"] == 0


async def _two_products(client: httpx2.AsyncClient, admin: User) -> tuple[JSON, JSON]:
    category = await create_category(client, admin)
    first = await create_product(client, admin, category["id"], price=1250, name="Teapot")
    second = await create_product(client, admin, category["id"], price=399, name="Tea cup")
    return first, second


async def test_a_new_cart_is_empty(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    cart = await get_cart(client, customer)
    assert set(cart) >= {"items", "total", "item_count"}
    _assert_empty(cart)


async def test_cart_requires_a_token(client: httpx2.AsyncClient) -> None:
    assert_unauthorized(await client.get("/cart"))
    assert_unauthorized(await client.put("/cart/items/1", json={"quantity": 1}))
    assert_unauthorized(await client.delete("/cart/items/1"))
    assert_unauthorized(await client.delete("/cart"))


async def test_put_sets_lines_and_totals(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    teapot, cup = await _two_products(client, admin)

    cart = await put_cart_item(client, customer, teapot["id"], 1)
    assert cart["items"] == [
        {
            "product_id": teapot["id"],
            "name": "Teapot",
            "unit_price": {"amount": 1250, "currency": "EUR"},
            "quantity": 1,
            "line_total": {"amount": 1250, "currency": "EUR"},
        }
    ]
    assert_money(cart["total"], 1250)
    assert cart["item_count"] == 1

    cart = await put_cart_item(client, customer, cup["id"], 4)
    lines = _lines(cart)
    assert set(lines) == {teapot["id"], cup["id"]}
    assert lines[cup["id"]]["name"] == "Tea cup"
    assert_money(lines[cup["id"]]["unit_price"], 399)
    assert lines[cup["id"]]["quantity"] == 4
    assert_money(lines[cup["id"]]["line_total"], 4 * 399)
    assert_money(cart["total"], 1250 + 4 * 399)

    # PUT sets (replaces) the quantity, it does not add to it
    cart = await put_cart_item(client, customer, teapot["id"], 3)
    lines = _lines(cart)
    assert lines[teapot["id"]]["quantity"] == 3
    assert_money(lines[teapot["id"]]["line_total"], 3 * 1250)
    assert_money(cart["total"], 3 * 1250 + 4 * 399)
    assert len(cart["items"]) == 2

    assert await get_cart(client, customer) == cart


async def test_quantity_bounds(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    teapot, _ = await _two_products(client, admin)
    cart = await put_cart_item(client, customer, teapot["id"], 1000)
    assert_money(cart["total"], 1000 * 1250)
    assert _lines(cart)[teapot["id"]]["quantity"] == 1000


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": 0},
        {"quantity": 1001},
        {"quantity": -1},
        {"quantity": 1.5},
        {"quantity": "3"},
        {"quantity": True},
        {},
    ],
    ids=["zero", "1001", "negative", "float", "string", "bool", "missing"],
)
async def test_invalid_quantity(client: httpx2.AsyncClient, admin: User, body: JSON) -> None:
    customer = await new_customer(client)
    teapot, _ = await _two_products(client, admin)
    await put_cart_item(client, customer, teapot["id"], 2)
    resp = await client.put(f"/cart/items/{teapot['id']}", json=body, headers=customer.headers)
    assert_validation_error(resp)
    cart = await get_cart(client, customer)
    assert _lines(cart)[teapot["id"]]["quantity"] == 2
    assert_money(cart["total"], 2 * 1250)


async def test_price_in_body_is_rejected_and_has_no_effect(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    teapot, _ = await _two_products(client, admin)
    resp = await client.put(
        f"/cart/items/{teapot['id']}",
        json={"quantity": 1, "price": {"amount": 1, "currency": "EUR"}},
        headers=customer.headers,
    )
    assert_validation_error(resp)
    _assert_empty(await get_cart(client, customer))
    resp = await client.put(
        f"/cart/items/{teapot['id']}",
        json={"quantity": 1, "unit_price": {"amount": 1, "currency": "EUR"}},
        headers=customer.headers,
    )
    assert_validation_error(resp)
    _assert_empty(await get_cart(client, customer))


async def test_unknown_product(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    resp = await client.put(f"/cart/items/{MAX_ID}", json={"quantity": 1}, headers=customer.headers)
    assert_problem(resp, 404, "product-not-found")
    _assert_empty(await get_cart(client, customer))


@pytest.mark.parametrize("bad_id", ["0", "-1", str(2**31), "abc"])
async def test_cart_product_ids_out_of_range(client: httpx2.AsyncClient, bad_id: str) -> None:
    customer = await new_customer(client)
    resp = await client.put(f"/cart/items/{bad_id}", json={"quantity": 1}, headers=customer.headers)
    assert_validation_error(resp)
    assert_validation_error(await client.delete(f"/cart/items/{bad_id}", headers=customer.headers))


async def test_delete_a_line(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    teapot, cup = await _two_products(client, admin)
    await put_cart_item(client, customer, teapot["id"], 2)
    await put_cart_item(client, customer, cup["id"], 3)

    cart = expect(await client.delete(f"/cart/items/{teapot['id']}", headers=customer.headers), 200)
    assert set(_lines(cart)) == {cup["id"]}
    assert_money(cart["total"], 3 * 399)

    # deleting an absent line is a no-op
    again = expect(
        await client.delete(f"/cart/items/{teapot['id']}", headers=customer.headers), 200
    )
    assert again == cart
    assert await get_cart(client, customer) == cart


async def test_delete_the_whole_cart(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    teapot, cup = await _two_products(client, admin)
    await put_cart_item(client, customer, teapot["id"], 2)
    await put_cart_item(client, customer, cup["id"], 3)

    expect_no_content(await client.delete("/cart", headers=customer.headers))
    _assert_empty(await get_cart(client, customer))
    expect_no_content(await client.delete("/cart", headers=customer.headers))
    _assert_empty(await get_cart(client, customer))


async def test_a_deleted_product_disappears_from_the_cart(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    teapot, cup = await _two_products(client, admin)
    await put_cart_item(client, customer, teapot["id"], 2)
    await put_cart_item(client, customer, cup["id"], 1)

    expect_no_content(await client.delete(f"/products/{teapot['id']}", headers=admin.headers))

    cart = await eventually(
        lambda: get_cart(client, customer), lambda cart: set(_lines(cart)) == {cup["id"]}
    )
    assert set(_lines(cart)) == {cup["id"]}
    assert_money(cart["total"], 399)
    resp = await client.put(
        f"/cart/items/{teapot['id']}", json={"quantity": 1}, headers=customer.headers
    )
    assert_problem(resp, 404, "product-not-found")


async def test_carts_are_private(client: httpx2.AsyncClient, admin: User) -> None:
    alice = await new_customer(client, "alice")
    bob = await new_customer(client, "bob")
    teapot, cup = await _two_products(client, admin)

    await put_cart_item(client, alice, teapot["id"], 2)
    _assert_empty(await get_cart(client, bob))

    await put_cart_item(client, bob, cup["id"], 5)
    expect(await client.delete(f"/cart/items/{teapot['id']}", headers=bob.headers), 200)
    expect_no_content(await client.delete("/cart", headers=bob.headers))

    alice_cart = await get_cart(client, alice)
    assert set(_lines(alice_cart)) == {teapot["id"]}
    assert _lines(alice_cart)[teapot["id"]]["quantity"] == 2
    assert_money(alice_cart["total"], 2500)
    _assert_empty(await get_cart(client, bob))


async def test_cart_full_beyond_100_distinct_lines(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    category = await create_category(client, admin)
    products = [await create_product(client, admin, category["id"], price=100) for _ in range(101)]
    for product in products[:100]:
        await put_cart_item(client, customer, product["id"], 1)

    resp = await client.put(
        f"/cart/items/{products[100]['id']}", json={"quantity": 1}, headers=customer.headers
    )
    assert_problem(resp, 409, "cart-full")

    cart = await get_cart(client, customer)
    assert len(cart["items"]) == 100
    assert_money(cart["total"], 100 * 100)
    # changing the quantity of an existing line is still fine
    cart = await put_cart_item(client, customer, products[0]["id"], 2)
    assert_money(cart["total"], 101 * 100)


async def test_quantity_written_as_whole_float(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    teapot, _ = await _two_products(client, admin)
    resp = await client.put(
        f"/cart/items/{teapot['id']}", json={"quantity": 3.0}, headers=customer.headers
    )
    cart = expect(resp, 200)
    assert _lines(cart)[teapot["id"]]["quantity"] == 3
    assert_money(cart["total"], 3 * 1250)
