"""Checkouts that must not go through, and what they leave behind."""

from __future__ import annotations

import time

import httpx2
import pytest

from tests.contract.helpers import (
    DECLINED_CARD,
    JSON,
    TIMEOUT_CARD,
    Target,
    User,
    all_orders,
    assert_order,
    assert_problem,
    assert_stock,
    assert_validation_error,
    checkout,
    create_category,
    create_product,
    expect,
    get_cart,
    new_customer,
    order_body,
    order_ready,
    payments_of,
    put_cart_item,
    set_stock,
    shipping_address,
    unique,
)

pytestmark = pytest.mark.anyio


async def _assert_untouched(
    client: httpx2.AsyncClient, customer: User, product_id: int, quantity: int
) -> None:
    """No order, no payment, and the cart still holds its line."""
    assert await all_orders(client, customer) == []
    assert await payments_of(client, customer) == []
    cart = await get_cart(client, customer)
    assert [(line["product_id"], line["quantity"]) for line in cart["items"]] == [
        (product_id, quantity)
    ]


async def _the_rejected_order(
    client: httpx2.AsyncClient, customer: User, failure_reason: str
) -> JSON:
    orders = await all_orders(client, customer)
    assert len(orders) == 1, orders
    order = assert_order(orders[0], status="rejected")
    assert order["failure_reason"] == failure_reason
    return order


async def _assert_nothing_charged(client: httpx2.AsyncClient, customer: User) -> None:
    payments = await payments_of(client, customer)
    assert len(payments) <= 1, payments
    assert all(p["status"] not in ("captured", "refunded") for p in payments), payments


# --------------------------------------------------------------------------- Idempotency-Key


@pytest.mark.parametrize(
    "key",
    [None, b"", b"k" * 256, b"tab\tinside", "ключ".encode()],
    ids=["missing", "empty", "too-long", "control-char", "non-ascii"],
)
async def test_idempotency_key_is_required(
    client: httpx2.AsyncClient, admin: User, key: bytes | None
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=3)
    headers = {b"Authorization": f"Bearer {customer.token}".encode()}
    if key is not None:
        headers[b"Idempotency-Key"] = key
    resp = await client.post("/orders", json=order_body(), headers=headers)
    assert_problem(resp, 400, "idempotency-key-missing")
    await _assert_untouched(client, customer, product["id"], 1)
    await assert_stock(client, admin, product["id"], on_hand=3)


@pytest.mark.parametrize(
    "shape",
    ["{u}", "~!#$%&'()*+,-./:;<=>?@[]^_`{{|}}\\{u}", "{u:z<255}", "key with inner spaces {u}"],
    ids=["uuid", "punctuation", "255-chars", "inner-spaces"],
)
async def test_idempotency_keys_of_printable_ascii_are_valid(
    client: httpx2.AsyncClient, admin: User, shape: str
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=3)
    key = shape.format(u=unique())
    assert 1 <= len(key) <= 255
    order = assert_order(expect(await checkout(client, customer, key=key), 201), status="confirmed")
    replay = await checkout(client, customer, key=key)
    assert replay.status_code == 201, replay.text
    assert replay.json()["id"] == order["id"]
    await assert_stock(client, admin, product["id"], on_hand=2)


# --------------------------------------------------------------------------- cart / stock


async def test_empty_cart(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    assert_problem(await checkout(client, customer), 409, "cart-empty")
    assert await all_orders(client, customer) == []
    assert await payments_of(client, customer) == []


async def test_out_of_stock_charges_nothing(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, quantity=3, on_hand=2)

    assert_problem(await checkout(client, customer), 409, "out-of-stock")

    await assert_stock(client, admin, product["id"], on_hand=2)
    assert await payments_of(client, customer) == []
    order = await _the_rejected_order(client, customer, "out-of-stock")
    assert [line["product_id"] for line in order["items"]] == [product["id"]]


async def test_never_stocked_product_is_out_of_stock(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    await put_cart_item(client, customer, product["id"], 1)

    assert_problem(await checkout(client, customer), 409, "out-of-stock")
    assert await payments_of(client, customer) == []
    await _the_rejected_order(client, customer, "out-of-stock")


async def test_one_short_line_reserves_nothing(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    category = await create_category(client, admin)
    plenty = await create_product(client, admin, category["id"])
    scarce = await create_product(client, admin, category["id"])
    await set_stock(client, admin, plenty["id"], 5)
    await set_stock(client, admin, scarce["id"], 1)
    await put_cart_item(client, customer, plenty["id"], 2)
    await put_cart_item(client, customer, scarce["id"], 2)

    assert_problem(await checkout(client, customer), 409, "out-of-stock")

    await assert_stock(client, admin, plenty["id"], on_hand=5)
    await assert_stock(client, admin, scarce["id"], on_hand=1)
    assert await payments_of(client, customer) == []
    await _the_rejected_order(client, customer, "out-of-stock")


# --------------------------------------------------------------------------- payment failures


async def test_declined_card_releases_the_stock(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, quantity=2, on_hand=5)

    resp = await checkout(client, customer, order_body(DECLINED_CARD))

    assert_problem(resp, 402, "payment-declined")
    await assert_stock(client, admin, product["id"], on_hand=5)
    order = await _the_rejected_order(client, customer, "payment-declined")
    assert order["card_last4"] == "0002"
    await _assert_nothing_charged(client, customer)
    for payment in await payments_of(client, customer):
        assert payment["order_id"] == order["id"]
        assert payment["status"] == "declined"


async def test_timed_out_card_releases_the_stock(
    client: httpx2.AsyncClient, admin: User, target: Target
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, quantity=2, on_hand=5)

    key = unique("idem-")
    started = time.monotonic()
    resp = await checkout(client, customer, order_body(TIMEOUT_CARD), key=key)
    elapsed = time.monotonic() - started

    assert_problem(resp, 504, "payment-timeout")
    assert elapsed >= 0.8 * target.payment_delay_seconds, elapsed
    await assert_stock(client, admin, product["id"], on_hand=5)
    order = await _the_rejected_order(client, customer, "payment-timeout")
    assert order["card_last4"] == "0119"
    await _assert_nothing_charged(client, customer)
    for payment in await payments_of(client, customer):
        assert payment["order_id"] == order["id"]
        assert payment["status"] == "timed_out"

    # the same key and body replay the 504; nothing is charged on the way
    replay = await checkout(client, customer, order_body(TIMEOUT_CARD), key=key)
    assert_problem(replay, 504, "payment-timeout")
    assert replay.json() == resp.json()
    assert [o["id"] for o in await all_orders(client, customer)] == [order["id"]]
    await _assert_nothing_charged(client, customer)
    await assert_stock(client, admin, product["id"], on_hand=5)


async def test_stock_released_by_a_failed_payment_can_be_bought(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, quantity=2, on_hand=2)
    assert_problem(
        await checkout(client, customer, order_body(DECLINED_CARD)), 402, "payment-declined"
    )
    await put_cart_item(client, customer, product["id"], 2)
    resp = await checkout(client, customer)
    assert resp.status_code == 201, resp.text
    await assert_stock(client, admin, product["id"], on_hand=0)


# --------------------------------------------------------------------------- card numbers


@pytest.mark.parametrize(
    ("card_number", "last4"),
    [
        ("424242424242", "4242"),
        ("4242424242424242424", "2424"),
        ("4242424242424241", "4241"),
        ("0000000000001234", "1234"),
    ],
    ids=["12-digits", "19-digits", "luhn-failing", "zeros"],
)
async def test_any_12_to_19_digits_are_left_to_the_processor(
    client: httpx2.AsyncClient, admin: User, card_number: str, last4: str
) -> None:
    """The shop checks only the digits; the (fake) processor approves all but 0002 / 0119."""
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=3)
    order = assert_order(
        expect(await checkout(client, customer, order_body(card_number)), 201), status="confirmed"
    )
    assert order["card_last4"] == last4
    payments = await payments_of(client, customer, order["id"])
    assert [(p["status"], p["card_last4"]) for p in payments] == [("captured", last4)]
    await assert_stock(client, admin, product["id"], on_hand=2)


# --------------------------------------------------------------------------- invalid bodies


@pytest.mark.parametrize(
    "card_number",
    [
        "4242abcd42424242",
        "42424242424",
        "42424242424242424242",
        "",
        "-4242424242424242",
    ],
    ids=["letters", "11-digits", "20-digits", "empty", "signed"],
)
async def test_invalid_card_number(
    client: httpx2.AsyncClient, admin: User, card_number: str
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=3)
    assert_validation_error(await checkout(client, customer, order_body(card_number)))
    await _assert_untouched(client, customer, product["id"], 1)
    await assert_stock(client, admin, product["id"], on_hand=3)


async def test_card_number_must_be_a_string_of_digits(
    client: httpx2.AsyncClient, admin: User
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer)
    body: JSON = {"card_number": 4242424242424242, "shipping_address": shipping_address()}
    assert_validation_error(await checkout(client, customer, body))
    await _assert_untouched(client, customer, product["id"], 1)


@pytest.mark.parametrize("country", ["XX", "USA", "G", "", "12"])
async def test_invalid_country(client: httpx2.AsyncClient, admin: User, country: str) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer)
    assert_validation_error(await checkout(client, customer, order_body(country=country)))
    await _assert_untouched(client, customer, product["id"], 1)


@pytest.mark.parametrize("missing", ["name", "line1", "city", "postal_code", "country"])
async def test_incomplete_shipping_address(
    client: httpx2.AsyncClient, admin: User, missing: str
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer)
    body = order_body()
    del body["shipping_address"][missing]
    assert_validation_error(await checkout(client, customer, body))
    await _assert_untouched(client, customer, product["id"], 1)


@pytest.mark.parametrize(
    "extra",
    [
        {"status": "confirmed"},
        {"total": {"amount": 1, "currency": "EUR"}},
        {"id": "00000000-0000-0000-0000-000000000001"},
        {"items": []},
    ],
    ids=["status", "total", "id", "items"],
)
async def test_order_body_rejects_server_owned_fields(
    client: httpx2.AsyncClient, admin: User, extra: JSON
) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer, on_hand=3)
    assert_validation_error(await checkout(client, customer, {**order_body(), **extra}))
    await _assert_untouched(client, customer, product["id"], 1)
    await assert_stock(client, admin, product["id"], on_hand=3)


async def test_address_rejects_unknown_fields(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    product = await order_ready(client, admin, customer)
    assert_validation_error(await checkout(client, customer, order_body(state="CA")))
    await _assert_untouched(client, customer, product["id"], 1)
