"""Checkout happy path, reading orders, and cancelling them."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx2
import pytest

from tests.contract.helpers import (
    DECLINED_CARD,
    JSON,
    User,
    all_orders,
    assert_money,
    assert_order,
    assert_page,
    assert_problem,
    assert_stock,
    assert_unauthorized,
    assert_validation_error,
    checkout,
    create_category,
    create_product,
    expect,
    get_cart,
    is_uuid,
    list_orders,
    money,
    new_customer,
    order_body,
    order_ready,
    payments_of,
    place_order,
    product_available,
    put_cart_item,
    set_stock,
)

pytestmark = pytest.mark.anyio


def _timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_checkout_confirms_and_charges(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    category = await create_category(client, admin)
    teapot = await create_product(client, admin, category["id"], price=1250, name="Teapot")
    cup = await create_product(client, admin, category["id"], price=399, name="Tea cup")
    await set_stock(client, admin, teapot["id"], 10)
    await set_stock(client, admin, cup["id"], 5)
    await put_cart_item(client, customer, teapot["id"], 3)
    await put_cart_item(client, customer, cup["id"], 2)
    body = order_body()

    resp = await checkout(client, customer, body)

    order = assert_order(expect(resp, 201), status="confirmed")
    assert order["failure_reason"] is None
    assert order["card_last4"] == "4242"
    assert order["shipping_address"] == body["shipping_address"]
    assert "4242424242424242" not in resp.text, "the full card number must not be echoed"
    assert sorted(order["items"], key=lambda line: line["product_id"]) == [
        {
            "product_id": teapot["id"],
            "name": "Teapot",
            "unit_price": money(1250),
            "quantity": 3,
            "line_total": money(3750),
        },
        {
            "product_id": cup["id"],
            "name": "Tea cup",
            "unit_price": money(399),
            "quantity": 2,
            "line_total": money(798),
        },
    ]
    assert_money(order["total"], 3750 + 798)
    assert _timestamp(order["updated_at"]) >= _timestamp(order["created_at"])

    # the cart is emptied, the stock is taken, nothing stays reserved
    cart = await get_cart(client, customer)
    assert cart["items"] == []
    assert_money(cart["total"], 0)
    await assert_stock(client, admin, teapot["id"], on_hand=7)
    await assert_stock(client, admin, cup["id"], on_hand=3)
    assert await product_available(client, teapot["id"], 7) == 7

    # exactly one captured payment of the total
    payments = await payments_of(client, customer, order["id"])
    assert len(payments) == 1
    payment = payments[0]
    assert set(payment) >= {
        "id",
        "order_id",
        "amount",
        "status",
        "card_last4",
        "created_at",
        "refunded_at",
    }
    assert is_uuid(payment["id"])
    assert payment["order_id"] == order["id"]
    assert payment["status"] == "captured"
    assert_money(payment["amount"], 3750 + 798)
    assert payment["card_last4"] == "4242"
    assert payment["refunded_at"] is None

    # the order reads back the same
    assert (
        expect(await client.get(f"/orders/{order['id']}", headers=customer.headers), 200) == order
    )
    page = await list_orders(client, customer)
    assert assert_page(page, limit=20, offset=0) == [order]


async def test_checkout_without_line2(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    await order_ready(client, admin, customer)
    body = order_body()
    del body["shipping_address"]["line2"]
    order = assert_order(expect(await checkout(client, customer, body), 201), status="confirmed")
    address = dict(order["shipping_address"])
    assert address.pop("line2", None) is None
    assert address == body["shipping_address"]


async def test_order_keeps_the_prices_of_checkout_time(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    product, order = await place_order(client, admin, customer, price=1000, quantity=2)
    assert_money(order["total"], 2000)

    resp = await client.patch(
        f"/products/{product['id']}",
        json={"price": money(5000), "name": "Renamed later"},
        headers=admin.headers,
    )
    expect(resp, 200)

    fetched = expect(await client.get(f"/orders/{order['id']}", headers=customer.headers), 200)
    assert fetched == order
    assert_money(fetched["items"][0]["unit_price"], 1000)
    payments = await payments_of(client, customer, order["id"])
    assert [p["amount"] for p in payments] == [money(2000)]


async def test_order_survives_the_deletion_of_its_product(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    product, order = await place_order(client, admin, customer, price=1500)
    resp = await client.delete(f"/products/{product['id']}", headers=admin.headers)
    assert resp.status_code == 204
    fetched = expect(await client.get(f"/orders/{order['id']}", headers=customer.headers), 200)
    assert fetched == order


async def test_orders_require_a_token(client: httpx2.AsyncClient) -> None:
    assert_unauthorized(await client.get("/orders"))
    assert_unauthorized(await client.get(f"/orders/{uuid.uuid4()}"))
    assert_unauthorized(await client.post(f"/orders/{uuid.uuid4()}/cancel"))
    resp = await client.post("/orders", json=order_body(), headers={"Idempotency-Key": "k-1"})
    assert_unauthorized(resp)


async def test_list_orders_is_own_newest_first_and_paged(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    other = await new_customer(client)
    orders = [
        (await place_order(client, admin, customer, price=100 * (i + 1)))[1] for i in range(3)
    ]
    newest_first = [o["id"] for o in reversed(orders)]

    page = await list_orders(client, customer, limit=2)
    assert [o["id"] for o in assert_page(page, limit=2, offset=0)] == newest_first[:2]
    assert page["next_offset"] == 2
    page = await list_orders(client, customer, limit=2, offset=2)
    assert [o["id"] for o in assert_page(page, limit=2, offset=2)] == newest_first[2:]
    assert page["next_offset"] is None

    page = await list_orders(client, customer)
    items = assert_page(page, limit=20, offset=0)
    assert items == list(reversed(orders))

    other_page = await list_orders(client, other)
    assert assert_page(other_page, limit=20, offset=0) == []
    assert other_page["next_offset"] is None


async def test_admin_lists_only_its_own_orders(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    _, order = await place_order(client, admin, customer)
    assert order["id"] not in {o["id"] for o in await all_orders(client, admin)}


@pytest.mark.parametrize(
    "params",
    [{"limit": 101}, {"limit": "x"}, {"offset": -1}],
    ids=["limit-101", "limit-x", "offset-negative"],
)
async def test_list_orders_rejects_invalid_query(client: httpx2.AsyncClient, params: JSON) -> None:
    customer = await new_customer(client)
    resp = await client.get("/orders", params=params, headers=customer.headers)
    assert_validation_error(resp)


async def test_get_order_visibility(client: httpx2.AsyncClient, admin: User) -> None:
    owner = await new_customer(client)
    stranger = await new_customer(client)
    _, order = await place_order(client, admin, owner)

    resp = await client.get(f"/orders/{order['id']}", headers=stranger.headers)
    assert_problem(resp, 404, "order-not-found")
    assert expect(await client.get(f"/orders/{order['id']}", headers=admin.headers), 200) == order
    assert expect(await client.get(f"/orders/{order['id']}", headers=owner.headers), 200) == order


async def test_get_unknown_order(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    resp = await client.get(f"/orders/{uuid.uuid4()}", headers=customer.headers)
    assert_problem(resp, 404, "order-not-found")


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "0", "6f1c2a3b4d5e4f60a7b8c9d0e1f2a3b4zz"])
async def test_malformed_order_id(client: httpx2.AsyncClient, bad_id: str) -> None:
    customer = await new_customer(client)
    assert_validation_error(await client.get(f"/orders/{bad_id}", headers=customer.headers))
    resp = await client.post(f"/orders/{bad_id}/cancel", headers=customer.headers)
    assert_validation_error(resp)


async def test_cancel_refunds_and_restocks(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    product, order = await place_order(client, admin, customer, price=700, quantity=3, on_hand=8)
    await assert_stock(client, admin, product["id"], on_hand=5)

    resp = await client.post(f"/orders/{order['id']}/cancel", headers=customer.headers)
    cancelled = assert_order(expect(resp, 200), status="cancelled")
    assert cancelled["id"] == order["id"]
    assert cancelled["items"] == order["items"]
    assert cancelled["total"] == order["total"]
    assert cancelled["card_last4"] == order["card_last4"]
    assert cancelled["shipping_address"] == order["shipping_address"]
    assert cancelled["created_at"] == order["created_at"]
    assert _timestamp(cancelled["updated_at"]) >= _timestamp(order["updated_at"])

    await assert_stock(client, admin, product["id"], on_hand=8)
    payments = await payments_of(client, customer, order["id"])
    assert len(payments) == 1
    assert payments[0]["status"] == "refunded"
    assert payments[0]["refunded_at"] is not None
    assert_money(payments[0]["amount"], 2100)
    fetched = expect(await client.get(f"/orders/{order['id']}", headers=customer.headers), 200)
    assert fetched == cancelled

    # cancelling again returns the order unchanged and refunds / restocks nothing more
    again = expect(
        await client.post(f"/orders/{order['id']}/cancel", headers=customer.headers), 200
    )
    assert again == cancelled
    await assert_stock(client, admin, product["id"], on_hand=8)
    assert [p["status"] for p in await payments_of(client, customer, order["id"])] == ["refunded"]


async def test_cancel_of_another_customers_order(client: httpx2.AsyncClient, admin: User) -> None:
    owner = await new_customer(client)
    stranger = await new_customer(client)
    product, order = await place_order(client, admin, owner, on_hand=4)

    resp = await client.post(f"/orders/{order['id']}/cancel", headers=stranger.headers)
    assert_problem(resp, 404, "order-not-found")
    fetched = expect(await client.get(f"/orders/{order['id']}", headers=owner.headers), 200)
    assert fetched["status"] == "confirmed"
    await assert_stock(client, admin, product["id"], on_hand=3)
    assert [p["status"] for p in await payments_of(client, owner, order["id"])] == ["captured"]


async def test_cancel_unknown_order(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    resp = await client.post(f"/orders/{uuid.uuid4()}/cancel", headers=customer.headers)
    assert_problem(resp, 404, "order-not-found")


async def test_cancel_of_a_rejected_order_is_not_cancellable(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=5)
    assert_problem(
        await checkout(client, customer, order_body(DECLINED_CARD)), 402, "payment-declined"
    )
    orders = await all_orders(client, customer)
    assert len(orders) == 1
    rejected = orders[0]
    assert rejected["status"] == "rejected"

    resp = await client.post(f"/orders/{rejected['id']}/cancel", headers=customer.headers)
    assert_problem(resp, 409, "order-not-cancellable")
    fetched = expect(await client.get(f"/orders/{rejected['id']}", headers=customer.headers), 200)
    assert fetched == rejected
    await assert_stock(client, admin, product["id"], on_hand=5)
