"""The workload's response checks: right answers pass, wrong bodies fail (not only statuses)."""

from __future__ import annotations

import copy
from typing import Any

from loadtests import checks

EUR = "EUR"


def product(product_id: int = 7, amount: int = 1299, **extra: Any) -> dict[str, Any]:
    return {
        "id": product_id,
        "sku": f"SEED-{product_id:05d}",
        "name": "Rustic oak teapot #7",
        "description": "A rustic oak teapot from the shopkata demo catalog.",
        "category_id": 1,
        "price": {"amount": amount, "currency": EUR},
        "created_at": "2026-11-24T05:00:00Z",
        **extra,
    }


def page(items: list[dict[str, Any]], limit: int = 20) -> dict[str, Any]:
    return {"items": items, "limit": limit, "offset": 0, "next_offset": None}


def cart(*lines: tuple[int, int, int]) -> dict[str, Any]:
    items = [
        {
            "product_id": pid,
            "name": f"p{pid}",
            "unit_price": {"amount": price, "currency": EUR},
            "quantity": qty,
            "line_total": {"amount": price * qty, "currency": EUR},
        }
        for pid, price, qty in lines
    ]
    total = sum(price * qty for _, price, qty in lines)
    return {
        "items": items,
        "total": {"amount": total, "currency": EUR},
        "item_count": sum(qty for _, _, qty in lines),
    }


def order(status: str = "confirmed") -> dict[str, Any]:
    return {
        "id": "6d0f2c1e-8f4e-4a35-9a39-2b8c4a6a0c11",
        "status": status,
        "items": cart((7, 1299, 2))["items"],
        "total": {"amount": 2598, "currency": EUR},
        "shipping_address": {
            "name": "A",
            "line1": "1",
            "city": "L",
            "postal_code": "N",
            "country": "GB",
        },
        "card_last4": "4242",
        "failure_reason": None,
        "created_at": "2026-11-24T05:00:00Z",
        "updated_at": "2026-11-24T05:00:00Z",
    }


def test_product_page() -> None:
    body = page([product(1, 100), product(2, 200)])
    assert checks.check_product_page(200, body, limit=20) is None
    assert checks.check_product_page(200, body, limit=20, sort="price") is None
    assert checks.check_product_page(500, body, limit=20) == "status 500, expected 200"
    assert "limit" in (checks.check_product_page(200, body, limit=1) or "")
    reversed_body = page([product(2, 200), product(1, 100)])
    assert "ascending" in (
        checks.check_product_page(200, reversed_body, limit=20, sort="price") or ""
    )
    assert "match" in (checks.check_product_page(200, body, limit=20, query="kettle") or "")
    assert checks.check_product_page(200, body, limit=20, query="TEAPOT") is None
    assert checks.check_product_page(200, {"items": []}, limit=20) == "not a page object"
    float_price = page([product(1, 100)])
    float_price["items"][0]["price"]["amount"] = 1.5
    assert "integer" in (checks.check_product_page(200, float_price, limit=20) or "")


def test_product_detail() -> None:
    assert checks.check_product_detail(200, product(7, available=5), product_id=7) is None
    assert "asked for product 7" in (
        checks.check_product_detail(200, product(8, available=5), product_id=7) or ""
    )
    assert "available" in (checks.check_product_detail(200, product(7), product_id=7) or "")
    assert checks.check_product_detail(404, {"type": "/problems/product-not-found"}, product_id=7)


def test_cart() -> None:
    body = cart((7, 1299, 2), (9, 500, 1))
    assert checks.check_cart(200, body) is None
    assert checks.check_cart(200, body, expect_line=(7, 2)) is None
    assert "expected 3" in (checks.check_cart(200, body, expect_line=(7, 3)) or "")
    wrong_total = copy.deepcopy(body)
    wrong_total["total"]["amount"] += 1
    assert "sum of its lines" in (checks.check_cart(200, wrong_total) or "")
    wrong_line = copy.deepcopy(body)
    wrong_line["items"][0]["line_total"]["amount"] = 1
    assert "unit_price x quantity" in (checks.check_cart(200, wrong_line) or "")
    wrong_count = copy.deepcopy(body)
    wrong_count["item_count"] = 2
    assert "item_count" in (checks.check_cart(200, wrong_count) or "")
    assert checks.check_cart(200, cart()) is None


def test_order_and_checkout() -> None:
    assert checks.check_order(201, order(), expected_status=201) is None
    assert "rejected" in (checks.check_order(201, order("rejected"), expected_status=201) or "")
    assert checks.check_order(200, order("cancelled")) is None
    assert checks.check_order(402, {"type": "/problems/payment-declined"}, expected_status=201)
    assert checks.check_order_page(200, page([order()])) is None
    assert checks.check_order_page(200, page([{"id": "x"}])) is not None


def test_identity_and_health() -> None:
    token = {"access_token": "abc", "token_type": "bearer", "expires_in": 3600}
    assert checks.check_token(200, token) is None
    assert checks.check_token(401, token) is not None
    assert checks.check_token(200, {"token_type": "bearer"}) == "no access_token"
    user = {"id": "u", "email": "a@b.example", "name": "A", "role": "customer"}
    assert checks.check_registered(201, user, email="A@b.example") is None
    assert checks.check_registered(201, {**user, "role": "admin"}, email="a@b.example")
    assert checks.check_registered(409, user, email="a@b.example")
    assert checks.check_health(200, {"status": "ok"}) is None
    assert checks.check_health(200, {"status": "degraded"}) is not None
    categories = [{"id": 1, "slug": "tea", "name": "Tea"}]
    assert checks.check_categories(200, categories) is None
    assert checks.check_categories(200, []) is not None
