"""Many customers racing for the last units: no overselling, nobody charged for nothing."""

from __future__ import annotations

import httpx2
import pytest

from tests.contract.helpers import (
    User,
    all_orders,
    assert_order,
    assert_problem,
    assert_stock,
    checkout,
    gather,
    new_customers,
    payments_of,
    product_available,
    put_cart_item,
    stocked_product,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("customers", "each_wants", "on_hand", "winners"),
    [(20, 1, 5, 5), (8, 2, 5, 2)],
    ids=["20-want-1-of-5", "8-want-2-of-5"],
)
async def test_last_units_are_sold_exactly_once(
    client: httpx2.AsyncClient,
    admin: User,
    customers: int,
    each_wants: int,
    on_hand: int,
    winners: int,
) -> None:
    product = await stocked_product(client, admin, price=990, on_hand=on_hand)
    buyers = await new_customers(client, customers)
    for buyer in buyers:
        await put_cart_item(client, buyer, product["id"], each_wants)

    responses = await gather(checkout(client, buyer) for buyer in buyers)

    created = [(b, r) for b, r in zip(buyers, responses, strict=True) if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(created) == winners, [r.status_code for r in responses]
    for resp in refused:
        assert_problem(resp, 409, "out-of-stock")

    sold = winners * each_wants
    await assert_stock(client, admin, product["id"], on_hand=on_hand - sold)
    assert await product_available(client, product["id"], on_hand - sold) == on_hand - sold

    captured = 0
    for buyer, resp in zip(buyers, responses, strict=True):
        payments = await payments_of(client, buyer)
        orders = await all_orders(client, buyer)
        assert len(orders) == 1
        if resp.status_code == 201:
            order = assert_order(resp.json(), status="confirmed")
            assert orders[0]["id"] == order["id"]
            assert order["total"] == {"amount": 990 * each_wants, "currency": "EUR"}
            assert [(p["order_id"], p["status"]) for p in payments] == [(order["id"], "captured")]
        else:
            assert orders[0]["status"] == "rejected"
            assert orders[0]["failure_reason"] == "out-of-stock"
            assert payments == []
        captured += sum(1 for p in payments if p["status"] == "captured")
    assert captured == winners
