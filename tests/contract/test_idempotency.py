"""`Idempotency-Key` on POST /orders: replays, reuse with another body, concurrent duplicates."""

from __future__ import annotations

import httpx2
import pytest

from tests.contract.helpers import (
    DECLINED_CARD,
    OTHER_APPROVED_CARD,
    User,
    all_orders,
    assert_order,
    assert_problem,
    assert_stock,
    checkout,
    expect,
    gather,
    get_cart,
    new_customer,
    order_body,
    order_ready,
    payments_of,
    put_cart_item,
    set_stock,
    unique,
)

pytestmark = pytest.mark.anyio


async def test_replay_returns_the_first_response(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, price=800, quantity=2, on_hand=6)
    key = unique("idem-")
    body = order_body()

    first = await checkout(client, customer, body, key=key)
    order = assert_order(expect(first, 201), status="confirmed")
    second = await checkout(client, customer, body, key=key)
    third = await checkout(client, customer, body, key=key)

    for replay in (second, third):
        assert replay.status_code == 201, replay.text
        assert replay.json() == first.json()

    assert [o["id"] for o in await all_orders(client, customer)] == [order["id"]]
    payments = await payments_of(client, customer)
    assert [(p["order_id"], p["status"]) for p in payments] == [(order["id"], "captured")]
    await assert_stock(client, admin, product["id"], on_hand=4)


async def test_replay_after_the_cart_was_refilled_still_replays(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, quantity=1, on_hand=6)
    key = unique("idem-")
    first = await checkout(client, customer, key=key)
    order = assert_order(expect(first, 201), status="confirmed")

    await put_cart_item(client, customer, product["id"], 3)
    replay = await checkout(client, customer, key=key)
    assert replay.status_code == 201, replay.text
    assert replay.json() == first.json()

    assert [o["id"] for o in await all_orders(client, customer)] == [order["id"]]
    cart = await get_cart(client, customer)
    assert [(line["product_id"], line["quantity"]) for line in cart["items"]] == [
        (product["id"], 3)
    ]
    await assert_stock(client, admin, product["id"], on_hand=5)


async def test_replay_of_a_declined_checkout(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=2)
    key = unique("idem-")
    body = order_body(DECLINED_CARD)

    first = await checkout(client, customer, body, key=key)
    assert_problem(first, 402, "payment-declined")
    replay = await checkout(client, customer, body, key=key)
    assert_problem(replay, 402, "payment-declined")
    assert replay.json() == first.json()

    orders = await all_orders(client, customer)
    assert len(orders) == 1
    assert orders[0]["status"] == "rejected"
    payments = await payments_of(client, customer)
    assert len(payments) <= 1
    assert all(p["status"] == "declined" for p in payments)
    await assert_stock(client, admin, product["id"], on_hand=2)


async def test_replay_of_an_out_of_stock_checkout(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, quantity=3, on_hand=1)
    key = unique("idem-")
    first = await checkout(client, customer, key=key)
    assert_problem(first, 409, "out-of-stock")

    # the replay is the first response, even once the stock would suffice
    await set_stock(client, admin, product["id"], 10)
    replay = await checkout(client, customer, key=key)
    assert_problem(replay, 409, "out-of-stock")
    assert replay.json() == first.json()

    orders = await all_orders(client, customer)
    assert [(o["status"], o["failure_reason"]) for o in orders] == [("rejected", "out-of-stock")]
    assert await payments_of(client, customer) == []
    await assert_stock(client, admin, product["id"], on_hand=10)


async def test_same_key_with_another_body_is_reused(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=6)
    key = unique("idem-")
    first = await checkout(client, customer, order_body(), key=key)
    order = assert_order(expect(first, 201), status="confirmed")

    await put_cart_item(client, customer, product["id"], 1)
    for other_body in (order_body(OTHER_APPROVED_CARD), order_body(city="Paris", country="FR")):
        resp = await checkout(client, customer, other_body, key=key)
        assert_problem(resp, 422, "idempotency-key-reused")

    assert [o["id"] for o in await all_orders(client, customer)] == [order["id"]]
    assert len(await payments_of(client, customer)) == 1
    await assert_stock(client, admin, product["id"], on_hand=5)
    cart = await get_cart(client, customer)
    assert [line["product_id"] for line in cart["items"]] == [product["id"]]

    # the original body still replays
    replay = await checkout(client, customer, order_body(), key=key)
    assert replay.status_code == 201, replay.text
    assert replay.json() == first.json()


async def test_distinct_keys_make_distinct_orders(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=6)
    first = assert_order(expect(await checkout(client, customer), 201), status="confirmed")
    await put_cart_item(client, customer, product["id"], 1)
    second = assert_order(expect(await checkout(client, customer), 201), status="confirmed")
    assert first["id"] != second["id"]
    assert len(await all_orders(client, customer)) == 2
    await assert_stock(client, admin, product["id"], on_hand=4)


async def test_concurrent_duplicates_make_one_order(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, price=450, quantity=2, on_hand=10)
    key = unique("idem-")
    body = order_body()

    responses = await gather(checkout(client, customer, body, key=key) for _ in range(10))

    created = [r for r in responses if r.status_code == 201]
    in_flight = [r for r in responses if r.status_code != 201]
    assert created, [r.text for r in responses]
    for resp in in_flight:
        assert_problem(resp, 409, "idempotency-key-in-flight")
    order_ids = {r.json()["id"] for r in created}
    assert len(order_ids) == 1
    assert all(r.json() == created[0].json() for r in created)

    orders = await all_orders(client, customer)
    assert [o["id"] for o in orders] == list(order_ids)
    assert orders[0]["status"] == "confirmed"
    payments = await payments_of(client, customer)
    assert [(p["order_id"], p["status"]) for p in payments] == [(orders[0]["id"], "captured")]
    await assert_stock(client, admin, product["id"], on_hand=8)

    # once settled, the key replays the order
    replay = await checkout(client, customer, body, key=key)
    assert replay.status_code == 201, replay.text
    assert replay.json() == created[0].json()
