"""Shared helpers of the black-box contract suite: assertions, data builders, JWT crafting.

Everything here speaks HTTP (through an `httpx2.AsyncClient`) and nothing else: the suite
must pass against the in-process monolith and against any running deployment alike.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

JSON = dict[str, Any]
T = TypeVar("T")

APPROVED_CARD = "4242424242424242"
OTHER_APPROVED_CARD = "5555555555554444"
DECLINED_CARD = "4000000000000002"
TIMEOUT_CARD = "4000000000000119"
CURRENCY = "EUR"
READ_MODEL_BOUND_SECONDS = 2.0
"""docs/api.md's promise: a product's ``available`` follows a stock change, and a cart's
names and prices follow a product change, within this many seconds under normal operation
(at once in the monolith; through the broker between services). The suite waits exactly
that long, polling, where a read model answers."""


# --------------------------------------------------------------------------- target


@dataclass(frozen=True)
class Target:
    """What the suite needs to know about the deployment under test."""

    transport: httpx2.AsyncBaseTransport | None
    base_url: str
    admin_email: str
    admin_password: str
    signing_key_pem: str
    issuer: str
    audience: str
    payment_delay_seconds: float

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Target:
        missing = {
            "transport",
            "base_url",
            "admin_email",
            "admin_password",
            "signing_key_pem",
            "issuer",
            "audience",
            "payment_delay_seconds",
        } - set(data)
        assert not missing, f"the target is missing {sorted(missing)}"
        return cls(
            transport=data["transport"],
            base_url=str(data["base_url"]),
            admin_email=str(data["admin_email"]),
            admin_password=str(data["admin_password"]),
            signing_key_pem=str(data["signing_key_pem"]),
            issuer=str(data["issuer"]),
            audience=str(data["audience"]),
            payment_delay_seconds=float(data["payment_delay_seconds"]),
        )

    def signing_key(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(self.signing_key_pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey), "the signing key is not an Ed25519 key"
        return key


class SharedTransport(httpx2.AsyncBaseTransport):
    """Lends the session's transport to a per-test client without letting it close it."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- values


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex}@example.com"


def money(amount: int) -> JSON:
    return {"amount": amount, "currency": CURRENCY}


def shipping_address(**overrides: Any) -> JSON:
    address: JSON = {
        "name": "Ada Lovelace",
        "line1": "12 Analytical Street",
        "line2": "Flat 3",
        "city": "London",
        "postal_code": "NW1 6XE",
        "country": "GB",
    }
    address.update(overrides)
    return address


def order_body(card_number: str = APPROVED_CARD, **address: Any) -> JSON:
    return {"card_number": card_number, "shipping_address": shipping_address(**address)}


def is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def gather(aws: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*aws))


# --------------------------------------------------------------------------- assertions


async def eventually(
    read: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    within: float = READ_MODEL_BOUND_SECONDS,
) -> T:
    """``read()`` again until ``accept`` takes its value or ``within`` seconds have passed;
    the last value either way (the caller asserts on it, so a failure shows it)."""
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if accept(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(0.02)


async def product_available(client: httpx2.AsyncClient, product_id: int, expected: int) -> int:
    """The product view's ``available``, once it shows ``expected`` (or the bound passed)."""

    async def read() -> int:
        value: int = expect(await client.get(f"/products/{product_id}"), 200)["available"]
        return value

    return await eventually(read, lambda available: available == expected)


def _describe(resp: httpx2.Response) -> str:
    return f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {resp.text[:500]}"


def expect(resp: httpx2.Response, status: int) -> JSON:
    """Asserts a successful JSON response with `status` and returns its object body."""
    assert resp.status_code == status, _describe(resp)
    content_type = resp.headers.get("content-type", "")
    assert content_type.startswith("application/json"), f"{content_type!r}: {_describe(resp)}"
    data = resp.json()
    assert isinstance(data, dict), _describe(resp)
    return data


def expect_list(resp: httpx2.Response, status: int = 200) -> list[Any]:
    assert resp.status_code == status, _describe(resp)
    assert resp.headers.get("content-type", "").startswith("application/json"), _describe(resp)
    data = resp.json()
    assert isinstance(data, list), _describe(resp)
    return data


def expect_no_content(resp: httpx2.Response) -> None:
    assert resp.status_code == 204, _describe(resp)
    assert resp.content == b"", _describe(resp)


def assert_problem(resp: httpx2.Response, status: int, slug: str) -> JSON:
    """Asserts an RFC 9457 problem response with the given status and `type` slug."""
    assert resp.status_code == status, _describe(resp)
    content_type = resp.headers.get("content-type", "")
    assert content_type.startswith("application/problem+json"), (
        f"{content_type!r}: {_describe(resp)}"
    )
    data = resp.json()
    assert isinstance(data, dict), _describe(resp)
    assert data.get("type") == f"/problems/{slug}", _describe(resp)
    assert data.get("status") == status, _describe(resp)
    assert isinstance(data.get("title"), str), _describe(resp)
    assert data["title"].strip(), _describe(resp)
    assert isinstance(data.get("detail"), str), _describe(resp)
    assert data["detail"].strip(), _describe(resp)
    return data


def assert_validation_error(resp: httpx2.Response) -> JSON:
    data = assert_problem(resp, 422, "validation-error")
    errors = data.get("errors")
    assert isinstance(errors, list), _describe(resp)
    assert errors, _describe(resp)
    for error in errors:
        assert isinstance(error, dict), _describe(resp)
        assert isinstance(error.get("loc"), list), _describe(resp)
        assert isinstance(error.get("msg"), str), _describe(resp)
        assert isinstance(error.get("type"), str), _describe(resp)
    return data


def assert_unauthorized(resp: httpx2.Response) -> JSON:
    data = assert_problem(resp, 401, "unauthorized")
    challenge = resp.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer"), f"WWW-Authenticate={challenge!r}: {_describe(resp)}"
    return data


def assert_page(data: JSON, *, limit: int, offset: int) -> list[JSON]:
    assert set(data) >= {"items", "limit", "offset", "next_offset"}, data
    assert data["limit"] == limit, data
    assert data["offset"] == offset, data
    items = data["items"]
    assert isinstance(items, list), data
    assert len(items) <= limit, data
    assert data["next_offset"] is None or isinstance(data["next_offset"], int), data
    return items


def assert_money(value: object, amount: int) -> None:
    assert value == {"amount": amount, "currency": CURRENCY}, value


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password: str
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def client_for(target: Target) -> httpx2.AsyncClient:
    """An HTTP client of ``target``: over its in-process transport, or over TCP."""
    transport = None if target.transport is None else SharedTransport(target.transport)
    return httpx2.AsyncClient(base_url=target.base_url, transport=transport, timeout=30.0)


async def sign_in_admin(client: httpx2.AsyncClient, target: Target) -> User:
    """The target's seeded administrator, logged in."""
    token = await login(client, target.admin_email, target.admin_password)
    me = expect(await client.get("/users/me", headers=bearer(token)), 200)
    assert me["role"] == "admin", me
    return User(
        id=me["id"],
        email=target.admin_email,
        password=target.admin_password,
        name=me["name"],
        token=token,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(
    client: httpx2.AsyncClient, email: str, password: str, name: str
) -> httpx2.Response:
    return await client.post(
        "/auth/register", json={"email": email, "password": password, "name": name}
    )


async def request_token(client: httpx2.AsyncClient, email: str, password: str) -> httpx2.Response:
    return await client.post("/auth/token", data={"username": email, "password": password})


async def login(client: httpx2.AsyncClient, email: str, password: str) -> str:
    data = expect(await request_token(client, email, password), 200)
    token = data["access_token"]
    assert isinstance(token, str), data
    return token


async def new_customer(client: httpx2.AsyncClient, prefix: str = "customer") -> User:
    email = unique_email(prefix)
    password = unique("pw-")
    name = f"Customer {uuid.uuid4().hex[:8]}"
    user = expect(await register(client, email, password, name), 201)
    token = await login(client, email, password)
    return User(id=user["id"], email=email, password=password, name=name, token=token)


async def new_customers(client: httpx2.AsyncClient, count: int) -> list[User]:
    """Registered one after the other: set-up is not what a test races."""
    return [await new_customer(client) for _ in range(count)]


# --------------------------------------------------------------------------- catalog / stock


async def create_category(client: httpx2.AsyncClient, admin: User, name: str | None = None) -> JSON:
    slug = unique("cat-")
    resp = await client.post(
        "/categories",
        json={"slug": slug, "name": name or f"Category {slug}"},
        headers=admin.headers,
    )
    return expect(resp, 201)


async def create_product(
    client: httpx2.AsyncClient,
    admin: User,
    category_id: int,
    *,
    price: int = 1999,
    name: str | None = None,
    description: str | None = None,
) -> JSON:
    sku = unique("SKU-")
    resp = await client.post(
        "/products",
        json={
            "sku": sku,
            "name": name or f"Product {sku}",
            "description": description or f"Description of {sku}",
            "category_id": category_id,
            "price": money(price),
        },
        headers=admin.headers,
    )
    return expect(resp, 201)


async def set_stock(client: httpx2.AsyncClient, admin: User, product_id: int, on_hand: int) -> JSON:
    resp = await client.put(
        f"/inventory/{product_id}", json={"on_hand": on_hand}, headers=admin.headers
    )
    return expect(resp, 200)


async def get_stock(client: httpx2.AsyncClient, admin: User, product_id: int) -> JSON:
    return expect(await client.get(f"/inventory/{product_id}", headers=admin.headers), 200)


async def assert_stock(
    client: httpx2.AsyncClient,
    admin: User,
    product_id: int,
    *,
    on_hand: int,
    reserved: int = 0,
) -> None:
    item = await get_stock(client, admin, product_id)
    assert item == {
        "product_id": product_id,
        "on_hand": on_hand,
        "reserved": reserved,
        "available": on_hand - reserved,
    }, item


async def stocked_product(
    client: httpx2.AsyncClient, admin: User, *, price: int = 1999, on_hand: int = 10
) -> JSON:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"], price=price)
    await set_stock(client, admin, product["id"], on_hand)
    return product


# --------------------------------------------------------------------------- cart / orders


async def put_cart_item(
    client: httpx2.AsyncClient, user: User, product_id: int, quantity: int
) -> JSON:
    resp = await client.put(
        f"/cart/items/{product_id}", json={"quantity": quantity}, headers=user.headers
    )
    return expect(resp, 200)


async def get_cart(client: httpx2.AsyncClient, user: User) -> JSON:
    return expect(await client.get("/cart", headers=user.headers), 200)


async def checkout(
    client: httpx2.AsyncClient,
    user: User,
    body: JSON | None = None,
    *,
    key: str | None = None,
) -> httpx2.Response:
    headers = {**user.headers, "Idempotency-Key": key or unique("idem-")}
    return await client.post(
        "/orders", json=body if body is not None else order_body(), headers=headers
    )


async def list_orders(client: httpx2.AsyncClient, user: User, **params: Any) -> JSON:
    return expect(await client.get("/orders", params=params, headers=user.headers), 200)


async def all_orders(client: httpx2.AsyncClient, user: User) -> list[JSON]:
    """Every order of `user`, following `next_offset` (bounded, to fail rather than hang)."""
    items: list[JSON] = []
    offset: int | None = 0
    for _ in range(1000):
        if offset is None:
            return items
        page = await list_orders(client, user, limit=100, offset=offset)
        items.extend(page["items"])
        offset = page["next_offset"]
    raise AssertionError("GET /orders never ended")


async def list_payments(client: httpx2.AsyncClient, user: User, **params: Any) -> JSON:
    return expect(await client.get("/payments", params=params, headers=user.headers), 200)


async def payments_of(
    client: httpx2.AsyncClient, user: User, order_id: str | None = None
) -> list[JSON]:
    params: dict[str, Any] = {"limit": 100}
    if order_id is not None:
        params["order_id"] = order_id
    page = await list_payments(client, user, **params)
    assert page["next_offset"] is None, page
    items: list[JSON] = page["items"]
    return items


# --------------------------------------------------------------------------- JWT crafting


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_json(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def token_header(token: str) -> JSON:
    header = jwt.get_unverified_header(token)
    assert isinstance(header, dict)
    return header


def token_claims(token: str) -> JSON:
    claims = json.loads(b64url_decode(token.split(".")[1]))
    assert isinstance(claims, dict)
    return claims


def claims_for(target: Target, user: User, **overrides: Any) -> JSON:
    now = int(time.time())
    claims: JSON = {
        "sub": user.id,
        "role": "customer",
        "iss": target.issuer,
        "aud": target.audience,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


ACCESS_TOKEN_TYPE = "at+jwt"
"""The JOSE ``typ`` every access token carries (RFC 9068)."""


def sign_eddsa(
    claims: Mapping[str, Any], key: Ed25519PrivateKey, kid: str, typ: str | None = ACCESS_TOKEN_TYPE
) -> str:
    """A token signed like the server's; ``typ=None`` leaves the type out of the header."""
    return jwt.encode(dict(claims), key, algorithm="EdDSA", headers={"kid": kid, "typ": typ})


def unsigned_token(claims: Mapping[str, Any], kid: str) -> str:
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64url_json(claims)}."


ORDER_FIELDS = {
    "id",
    "status",
    "items",
    "total",
    "shipping_address",
    "card_last4",
    "failure_reason",
    "created_at",
    "updated_at",
}


def assert_order(data: JSON, *, status: str) -> JSON:
    assert set(data) >= ORDER_FIELDS, data
    assert is_uuid(data["id"]), data
    assert data["status"] == status, data
    assert isinstance(data["items"], list), data
    assert isinstance(data["created_at"], str), data
    assert isinstance(data["updated_at"], str), data
    return data


async def order_ready(
    client: httpx2.AsyncClient,
    admin: User,
    customer: User,
    *,
    price: int = 1000,
    quantity: int = 1,
    on_hand: int = 10,
) -> JSON:
    """Creates a stocked product and puts `quantity` of it in the customer's cart."""
    product = await stocked_product(client, admin, price=price, on_hand=on_hand)
    await put_cart_item(client, customer, product["id"], quantity)
    return product


async def place_order(
    client: httpx2.AsyncClient,
    admin: User,
    customer: User,
    *,
    price: int = 1000,
    quantity: int = 1,
    on_hand: int = 10,
) -> tuple[JSON, JSON]:
    """A confirmed order of a fresh product: returns (product, order)."""
    product = await order_ready(
        client, admin, customer, price=price, quantity=quantity, on_hand=on_hand
    )
    order = assert_order(expect(await checkout(client, customer), 201), status="confirmed")
    return product, order
