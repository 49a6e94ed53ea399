"""Response checks of the shopper workload, free of Locust so tests can call them directly.

Each check takes the status code and the decoded JSON body of one response and returns
``None`` when the answer is right, or a short reason when it is wrong. The locustfile marks
a request failed on any reason: a wrong body is a failure, not just a wrong status.
"""

from __future__ import annotations

from typing import Any

Reason = str | None

PAGE_KEYS = {"items", "limit", "offset", "next_offset"}
PRODUCT_KEYS = {"id", "sku", "name", "description", "category_id", "price", "created_at"}
CART_KEYS = {"items", "total", "item_count"}
ORDER_KEYS = {"id", "status", "items", "total", "shipping_address", "card_last4"}


def _status(status: int, expected: int) -> Reason:
    return None if status == expected else f"status {status}, expected {expected}"


def _money(value: Any) -> Reason:
    if not isinstance(value, dict):
        return "money is not an object"
    amount = value.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        return f"money amount {amount!r} is not a non-negative integer"
    if value.get("currency") != "EUR":
        return f"currency {value.get('currency')!r}"
    return None


def check_product(product: Any) -> Reason:
    """One product as lists and ``GET /products/{id}`` show it."""
    if not isinstance(product, dict):
        return "product is not an object"
    missing = PRODUCT_KEYS - product.keys()
    if missing:
        return f"product lacks {sorted(missing)}"
    if not isinstance(product["id"], int):
        return "product id is not an integer"
    return _money(product["price"])


def check_categories(status: int, body: Any) -> Reason:
    """``GET /categories``: a non-empty list of ``{id, slug, name}``."""
    reason = _status(status, 200)
    if reason:
        return reason
    if not isinstance(body, list) or not body:
        return "categories is not a non-empty list"
    for category in body:
        if not isinstance(category, dict) or not {"id", "slug", "name"} <= category.keys():
            return f"bad category {category!r}"
    return None


def check_product_page(
    status: int, body: Any, *, limit: int, query: str | None = None, sort: str | None = None
) -> Reason:
    """``GET /products``: a page of at most ``limit`` products; with ``q`` every item
    contains the text; with ``sort=price`` the prices never go down."""
    reason = _status(status, 200)
    if reason:
        return reason
    if not isinstance(body, dict) or not body.keys() >= PAGE_KEYS:
        return "not a page object"
    items = body["items"]
    if not isinstance(items, list) or len(items) > limit:
        return f"page holds {len(items) if isinstance(items, list) else '?'} items, limit {limit}"
    for item in items:
        reason = check_product(item)
        if reason:
            return reason
        if query is not None:
            text = f"{item['name']} {item['description']}".lower()
            if query.lower() not in text:
                return f"product {item['id']} does not match q={query!r}"
    if sort == "price":
        amounts = [item["price"]["amount"] for item in items]
        if amounts != sorted(amounts):
            return "sort=price is not ascending"
    return None


def check_product_detail(status: int, body: Any, *, product_id: int) -> Reason:
    """``GET /products/{id}``: that product, plus a non-negative ``available``."""
    reason = _status(status, 200)
    if reason:
        return reason
    reason = check_product(body)
    if reason:
        return reason
    if body["id"] != product_id:
        return f"asked for product {product_id}, got {body['id']}"
    available = body.get("available")
    if not isinstance(available, int) or available < 0:
        return f"available {available!r}"
    return None


def check_cart(status: int, body: Any, *, expect_line: tuple[int, int] | None = None) -> Reason:
    """A cart; ``expect_line=(product_id, quantity)`` must be in it; totals must add up."""
    reason = _status(status, 200)
    if reason:
        return reason
    if not isinstance(body, dict) or not body.keys() >= CART_KEYS:
        return "not a cart"
    items = body["items"]
    if not isinstance(items, list):
        return "cart items is not a list"
    total = 0
    count = 0
    for line in items:
        if not isinstance(line, dict) or not {"product_id", "quantity", "line_total"} <= set(line):
            return f"bad cart line {line!r}"
        reason = _money(line["line_total"]) or _money(line.get("unit_price"))
        if reason:
            return reason
        if line["line_total"]["amount"] != line["unit_price"]["amount"] * line["quantity"]:
            return f"line {line['product_id']}: line_total is not unit_price x quantity"
        total += line["line_total"]["amount"]
        count += line["quantity"]
    reason = _money(body["total"])
    if reason:
        return reason
    if body["total"]["amount"] != total:
        return f"cart total {body['total']['amount']} is not the sum of its lines {total}"
    if body["item_count"] != count:
        return f"item_count {body['item_count']} is not the {count} units of its lines"
    if expect_line is not None:
        product_id, quantity = expect_line
        lines = {line["product_id"]: line["quantity"] for line in items}
        if lines.get(product_id) != quantity:
            return f"cart has {lines.get(product_id)} of product {product_id}, expected {quantity}"
    return None


def check_order(status: int, body: Any, *, expected_status: int = 200) -> Reason:
    """One order; a checkout (``expected_status=201``) must be ``confirmed``."""
    reason = _status(status, expected_status)
    if reason:
        return reason
    if not isinstance(body, dict) or not body.keys() >= ORDER_KEYS:
        return "not an order"
    if expected_status == 201 and body["status"] != "confirmed":
        return f"checkout ended {body['status']} ({body.get('failure_reason')})"
    if not isinstance(body["items"], list) or not body["items"]:
        return "order has no items"
    return _money(body["total"])


def check_order_page(status: int, body: Any) -> Reason:
    """``GET /orders``: a page of the caller's orders."""
    reason = _status(status, 200)
    if reason:
        return reason
    if not isinstance(body, dict) or not body.keys() >= PAGE_KEYS:
        return "not a page object"
    for order in body["items"]:
        if not isinstance(order, dict) or not order.keys() >= ORDER_KEYS:
            return "page holds something that is not an order"
    return None


def check_token(status: int, body: Any) -> Reason:
    """``POST /auth/token``: a bearer token."""
    reason = _status(status, 200)
    if reason:
        return reason
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        return "no access_token"
    if str(body.get("token_type", "")).lower() != "bearer":
        return f"token_type {body.get('token_type')!r}"
    return None


def check_registered(status: int, body: Any, *, email: str) -> Reason:
    """``POST /auth/register``: the new customer."""
    reason = _status(status, 201)
    if reason:
        return reason
    if not isinstance(body, dict) or body.get("email") != email.lower():
        return "registered user does not echo the email"
    if body.get("role") != "customer":
        return f"role {body.get('role')!r}"
    return None


def check_health(status: int, body: Any) -> Reason:
    """``GET /healthz``, the trivial endpoint of the reference ceiling."""
    reason = _status(status, 200)
    if reason:
        return reason
    if body != {"status": "ok"}:
        return f"healthz said {body!r}"
    return None
