"""Business-flow abuse (OWASP API6): one account must not hold the stock or refund at will.

Before: parallel checkouts of one account on the slow card each held their units until the
processor answered, so one account could hold a product's whole stock; any quantity up to
the cart's 1,000 went into one order; and a confirmed order could be cancelled for a full
refund at any time.
"""

from __future__ import annotations

import httpx2
import pytest

from tests.contract.helpers import (
    TIMEOUT_CARD,
    User,
    assert_problem,
    assert_stock,
    checkout,
    expect,
    gather,
    new_customer,
    order_body,
    put_cart_item,
    stocked_product,
)

pytestmark = pytest.mark.anyio


async def test_one_customer_has_one_checkout_in_flight(
    client: httpx2.AsyncClient, admin: User
) -> None:
    product = await stocked_product(client, admin, on_hand=50)
    hoarder = await new_customer(client)
    await put_cart_item(client, hoarder, product["id"], 5)

    answers = await gather(checkout(client, hoarder, order_body(TIMEOUT_CARD)) for _ in range(4))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [409, 409, 409, 504], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "checkout-in-progress")
            assert answer.headers["Retry-After"] == "1"
    # The one that ran released its units; nothing else was ever held.
    await assert_stock(client, admin, product["id"], on_hand=50, reserved=0)


async def test_other_customers_check_out_while_one_is_in_flight(
    client: httpx2.AsyncClient, admin: User
) -> None:
    product = await stocked_product(client, admin, on_hand=50)
    slow, quick = await new_customer(client), await new_customer(client)
    await put_cart_item(client, slow, product["id"], 1)
    await put_cart_item(client, quick, product["id"], 1)

    answers = await gather(
        [checkout(client, slow, order_body(TIMEOUT_CARD)), checkout(client, quick)]
    )

    assert [answer.status_code for answer in answers] == [504, 201]


async def test_units_of_one_product_per_order_are_capped(
    client: httpx2.AsyncClient, admin: User
) -> None:
    product = await stocked_product(client, admin, on_hand=500)
    customer = await new_customer(client)
    await put_cart_item(client, customer, product["id"], 21)

    refused = await checkout(client, customer)

    problem = assert_problem(refused, 409, "order-limit-exceeded")
    assert problem["product_ids"] == [product["id"]]
    await assert_stock(client, admin, product["id"], on_hand=500, reserved=0)
    await put_cart_item(client, customer, product["id"], 20)
    expect(await checkout(client, customer), 201)
