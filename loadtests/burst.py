"""A burst of checkouts that meets an outage: what an operator would try, as a workload.

Customers with filled carts check out at once (cards mixed: approved, declined, slow), and
every client retries its checkout with the same Idempotency-Key once a second while the
answer is not an outcome (a 409 in flight, a 502/503/504 that is not ``payment-timeout``, a
dropped connection), as the API invites. Meanwhile something may happen to the shop (a
service killed and started again). Afterwards the burst reads what it left, through the
public API as an admin, and lists what breaks the shop's promises.

Only HTTP: the same burst runs against the monolith and the services, from the system tests
(``tests/system/test_outages.py``) and the benchmark (``python -m bench.outage``).
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
SLOW_CARD = "4000000000000119"
EXPECTED: dict[str, tuple[int, str | None]] = {
    APPROVED_CARD: (201, None),
    DECLINED_CARD: (402, "payment-declined"),
    SLOW_CARD: (504, "payment-timeout"),
}
"""The outcome each card must end with, whatever happened to the shop meanwhile."""
FINAL_CONFLICTS = {"out-of-stock", "cart-empty", "checkout-interrupted", "order-limit-exceeded"}
"""409 answers that are outcomes (``idempotency-key-in-flight`` is not: ask again)."""
STOCK = 1_000
PRICES = (1999, 2500)
PROBLEM_JSON = "application/problem+json"
PREPARE_CONCURRENCY = 4


def card_of(index: int) -> str:
    """One customer in eight declined, one in eight slow, the rest approved."""
    return DECLINED_CARD if index % 8 == 3 else SLOW_CARD if index % 8 == 6 else APPROVED_CARD


def is_outcome(status: int | str, slug: str | None) -> bool:
    """Whether an answer to POST /orders tells how the checkout ended.

    ``checkout-interrupted`` is one whatever its status: before checkouts rode out outages it
    was a 503, and the same key answered it for good.
    """
    if slug == "checkout-interrupted":
        return True
    if status == 409:
        return slug in FINAL_CONFLICTS
    return status in (201, 402) or (status == 504 and slug == "payment-timeout")


def _slug(response: httpx2.Response) -> str | None:
    if response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return str(response.json().get("type", "")).removeprefix("/problems/")
    return None


@dataclass
class Customer:
    email: str
    token: str
    card: str
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    tries: list[tuple[int | str, str | None]] = field(default_factory=list)
    seconds: float = math.nan
    """From the first POST /orders to the outcome (or to giving up)."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def outcome(self) -> tuple[int | str, str | None]:
        return self.tries[-1] if self.tries else ("none", None)

    @property
    def lost(self) -> bool:
        """The checkout did not end as its card says it must (an approved card rejected)."""
        return self.outcome != EXPECTED[self.card]


@dataclass
class Burst:
    """The shop's side of a burst: the admin, the products, the customers."""

    admin_token: str
    products: list[int]
    customers: list[Customer]

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def lost(self) -> list[Customer]:
        return [customer for customer in self.customers if customer.lost]

    def percentile(self, q: float) -> float:
        """The checkouts' time to an outcome at quantile ``q`` (nearest rank), in seconds."""
        times = sorted(customer.seconds for customer in self.customers)
        return times[max(0, math.ceil(q * len(times)) - 1)]

    def summary(self) -> str:
        outcomes = Counter(customer.outcome for customer in self.customers)
        answers = Counter(answer for c in self.customers for answer in c.tries)
        return (
            f"outcomes {dict(outcomes)}; answers seen {dict(answers)};"
            f" p50 {self.percentile(0.5):.2f} s, p99 {self.percentile(0.99):.2f} s"
        )


def _expect(response: httpx2.Response, status: int) -> Any:
    if response.status_code != status:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path} -> {response.status_code}:"
            f" {response.text[:300]}"
        )
    return response.json() if response.content else None


async def _token(client: httpx2.AsyncClient, email: str, password: str) -> str:
    response = await client.post("/auth/token", data={"username": email, "password": password})
    return str(_expect(response, 200)["access_token"])


async def prepare(
    client: httpx2.AsyncClient, *, admin_email: str, admin_password: str, customers: int
) -> Burst:
    """Products with plenty of stock, and customers whose carts hold one or two of them."""
    admin = await _token(client, admin_email, admin_password)
    headers = {"Authorization": f"Bearer {admin}"}
    label = uuid.uuid4().hex[:8]
    category = _expect(
        await client.post(
            "/categories",
            json={"slug": f"burst-{label}", "name": f"Burst {label}"},
            headers=headers,
        ),
        201,
    )
    products: list[int] = []
    for number, price in enumerate(PRICES):
        product = _expect(
            await client.post(
                "/products",
                json={
                    "sku": f"BURST-{label}-{number}",
                    "name": f"Burst product {number}",
                    "description": "",
                    "category_id": category["id"],
                    "price": {"amount": price, "currency": "EUR"},
                },
                headers=headers,
            ),
            201,
        )
        _expect(
            await client.put(
                f"/inventory/{product['id']}", json={"on_hand": STOCK}, headers=headers
            ),
            200,
        )
        products.append(product["id"])
    people: list[Customer] = []
    # A few at a time: the burst is the checkouts, not the sign-ups (on PostgreSQL, 24
    # sign-ups at once can take every connection the server allows).
    limiter = anyio.CapacityLimiter(PREPARE_CONCURRENCY)

    async def customer(index: int) -> None:
        async with limiter:
            await _customer(index)

    async def _customer(index: int) -> None:
        email = f"burst-{label}-{index}@example.com"
        password = f"burst-password-{label}"
        response = await client.post(
            "/auth/register", json={"email": email, "password": password, "name": f"B {index}"}
        )
        _expect(response, 201)
        person = Customer(email, await _token(client, email, password), card_of(index))
        for product_id in products[: 1 + index % 2]:
            response = await client.put(
                f"/cart/items/{product_id}", json={"quantity": 2}, headers=person.headers
            )
            _expect(response, 200)
        people.append(person)

    async with anyio.create_task_group() as tasks:
        for index in range(customers):
            tasks.start_soon(customer, index)
    return Burst(admin, products, people)


async def _check_out(client: httpx2.AsyncClient, customer: Customer, give_up: float) -> None:
    """POST /orders, then the same request again once a second until it is an outcome."""
    started = time.monotonic()
    body = {
        "card_number": customer.card,
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "12 Analytical Street",
            "city": "London",
            "postal_code": "NW1 6XE",
            "country": "GB",
        },
    }
    while time.monotonic() - started < give_up:
        try:
            response = await client.post(
                "/orders", json=body, headers={**customer.headers, "Idempotency-Key": customer.key}
            )
        except httpx2.TransportError as exc:
            customer.tries.append((type(exc).__name__, None))
        else:
            customer.tries.append((response.status_code, _slug(response)))
            if is_outcome(*customer.tries[-1]):
                break
        await anyio.sleep(1.0)
    customer.seconds = time.monotonic() - started


async def check_out(
    client: httpx2.AsyncClient,
    burst: Burst,
    *,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
    give_up: float = 60.0,
) -> None:
    """Every customer checks out at once, retrying by key; ``meanwhile`` runs beside them."""
    async with anyio.create_task_group() as tasks:
        for customer in burst.customers:
            tasks.start_soon(_check_out, client, customer, give_up)
        if meanwhile is not None:
            await meanwhile()


async def broken_promises(client: httpx2.AsyncClient, burst: Burst) -> list[str]:
    """What the burst left that the shop promises never to: one order per key, none pending,
    one capture (of its total) per confirmed order and none on the others, stock conserved
    with nothing left reserved."""
    broken: list[str] = []
    sold: Counter[int] = Counter()
    for customer in burst.customers:
        page = _expect(await client.get("/orders", headers=customer.headers), 200)
        orders = page["items"]
        if len(orders) != 1:
            broken.append(f"{customer.email}: {len(orders)} orders for one key")
            continue
        (order,) = orders
        if order["status"] not in ("confirmed", "rejected"):
            broken.append(f"order {order['id']} is {order['status']}")
        response = await client.get(
            "/payments", params={"order_id": order["id"]}, headers=burst.admin_headers
        )
        captured = [p for p in _expect(response, 200)["items"] if p["status"] == "captured"]
        if order["status"] == "confirmed":
            if [p["amount"] for p in captured] != [order["total"]]:
                broken.append(f"confirmed order {order['id']}: captured {captured}")
            for line in order["items"]:
                sold[line["product_id"]] += line["quantity"]
        elif captured:
            broken.append(f"{order['status']} order {order['id']}: captured {captured}")
    for product_id in burst.products:
        response = await client.get(f"/inventory/{product_id}", headers=burst.admin_headers)
        stock = _expect(response, 200)
        expected = STOCK - sold[product_id]
        if (stock["on_hand"], stock["reserved"]) != (expected, 0):
            broken.append(f"product {product_id}: {stock}, {expected} expected on hand")
    return broken
