"""Payments are listed to their payer (and to the admin) only."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import pytest

from tests.contract.helpers import (
    User,
    assert_money,
    assert_page,
    assert_unauthorized,
    assert_validation_error,
    list_payments,
    new_customer,
    payments_of,
    place_order,
)

pytestmark = pytest.mark.anyio


async def test_payments_are_private(client: httpx2.AsyncClient, admin: User) -> None:
    owner = await new_customer(client)
    stranger = await new_customer(client)
    _, order = await place_order(client, admin, owner, price=1234, quantity=2)

    mine = await payments_of(client, owner, order["id"])
    assert [(p["order_id"], p["status"]) for p in mine] == [(order["id"], "captured")]
    assert_money(mine[0]["amount"], 2468)
    assert await payments_of(client, owner) == mine

    page = await list_payments(client, stranger, order_id=order["id"])
    assert assert_page(page, limit=20, offset=0) == []
    assert page["next_offset"] is None
    assert await payments_of(client, stranger) == []

    as_admin = await payments_of(client, admin, order["id"])
    assert as_admin == mine


async def test_payments_page_shape(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    orders = [(await place_order(client, admin, customer))[1] for _ in range(3)]
    page = await list_payments(client, customer, limit=2)
    first = assert_page(page, limit=2, offset=0)
    assert len(first) == 2
    assert page["next_offset"] == 2
    page = await list_payments(client, customer, limit=2, offset=2)
    rest = assert_page(page, limit=2, offset=2)
    assert len(rest) == 1
    assert page["next_offset"] is None
    assert {p["order_id"] for p in first + rest} == {o["id"] for o in orders}


async def test_payments_of_an_unknown_order_are_empty(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    assert await payments_of(client, customer, str(uuid.uuid4())) == []


@pytest.mark.parametrize(
    "params",
    [{"order_id": "not-a-uuid"}, {"limit": 101}, {"offset": -1}],
    ids=["order-id", "limit-101", "offset-negative"],
)
async def test_payments_query_validation(
    client: httpx2.AsyncClient, params: dict[str, Any]
) -> None:
    customer = await new_customer(client)
    resp = await client.get("/payments", params=params, headers=customer.headers)
    assert_validation_error(resp)


async def test_payments_require_a_token(client: httpx2.AsyncClient) -> None:
    assert_unauthorized(await client.get("/payments", params={"order_id": str(uuid.uuid4())}))
