"""Faults on real processes: a service dies in the middle of a stream of checkouts.

Many customers check out concurrently through the gateway of the services topology; the
inventory or the payments service is killed with SIGKILL (by its pid) mid-stream, left dead
for a moment, and started again through the launcher. Then the invariants must hold, read
through the public API as an admin:

- stock on hand = initial - sold, nothing left reserved, never negative;
- every confirmed order has exactly one captured payment (of its total) and its stock
  committed; every rejected or cancelled order has its stock released and no net charge;
- checkouts ride the outage out (their steps are retried within the checkout's deadline):
  none started during it ends ``checkout-interrupted``;
- no saga is left pending: a client that got no outcome (a 409 in flight) finds its order
  confirmed or rejected, and replaying its request (same Idempotency-Key) answers with it;
- while the service is down the gateway answers 503 problem+json within its timeout
  budget; nothing ever hangs.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pytest

from launcher import Launcher
from tests import support
from tests.contract.helpers import (
    APPROVED_CARD,
    DECLINED_CARD,
    TIMEOUT_CARD,
    User,
    create_category,
    create_product,
    login,
    new_customer,
    order_body,
    set_stock,
)
from tests.system.conftest import (
    GATEWAY_BUDGET_SECONDS,
    launched,
    launcher_env,
    pid_alive,
    require_services,
)

pytestmark = pytest.mark.anyio

CUSTOMERS = 12
MAX_CHECKOUTS_PER_CUSTOMER = 40
CONFIRMED_BEFORE_KILL = 15
CONFIRMED_AFTER_RESTART = 8
OUTAGE_SECONDS = 1.5
PHASE_TIMEOUT_SECONDS = 40.0
RECOVERY_TIMEOUT_SECONDS = 40.0
PRICES = [1999, 2500, 999]
INITIAL_STOCK = [10_000, 10_000, 40]
"""The last product is scarce, so some checkouts are rejected out of stock."""
CANCEL_SHARE = 0.15
PROBLEM_JSON = "application/problem+json"

# The answers a checkout ends with, by status; anything else is not an outcome.
FINAL: dict[int | str, set[str | None]] = {
    201: {None},
    402: {"payment-declined"},
    409: {"out-of-stock", "cart-empty", "checkout-interrupted"},
    504: {"payment-timeout"},
}
NOT_YET = {(409, "idempotency-key-in-flight")}
IN_FLIGHT_RETRIES = 10
"""An answer that is no outcome: the checkout runs on; the same key asked again tells."""


@dataclass
class Attempt:
    """One POST /orders of the stream."""

    customer: int
    key: str
    body: dict[str, Any]
    started: float
    seconds: float
    status: int | str
    slug: str | None = None
    order: dict[str, Any] | None = None


@dataclass
class Stream:
    """What the shoppers did, and when the victim was down."""

    attempts: list[Attempt] = field(default_factory=list)
    cart_answers: list[tuple[str, int | str, float]] = field(default_factory=list)
    cancels: dict[str, int | str] = field(default_factory=dict)
    killed_at: float | None = None
    restarted_at: float | None = None
    stop: anyio.Event = field(default_factory=anyio.Event)

    def confirmed(self, after: float = 0.0) -> int:
        return sum(1 for a in self.attempts if a.status == 201 and a.started > after)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory, signing_key_file: Path) -> Iterator[Launcher]:
    """The services topology with a quick recovery loop in the orders service."""
    require_services()
    env = launcher_env(
        signing_key_file,
        ORDERS_RECOVERY_GRACE_SECONDS="1",
        ORDERS_RECOVERY_INTERVAL_SECONDS="0.5",
    )
    with launched(
        "topologies/kata-06-services.toml", tmp_path_factory.mktemp("faults"), env
    ) as launcher:
        yield launcher


def _is_outcome(status: int | str, slug: str | None) -> bool:
    """Whether an answer to POST /orders tells how the checkout ended."""
    return slug in FINAL.get(status, set())


def _slug(response: httpx2.Response) -> str | None:
    if response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return str(response.json().get("type", "")).removeprefix("/problems/")
    return None


async def _shopper(
    client: httpx2.AsyncClient, user: User, index: int, products: list[int], stream: Stream
) -> None:
    rng = random.Random(index)  # a reproducible workload
    for _ in range(MAX_CHECKOUTS_PER_CUSTOMER):
        if stream.stop.is_set():
            return
        # Start from an empty cart: a rejected checkout leaves its lines behind.
        started = time.monotonic()
        response = await client.delete("/cart", headers=user.headers)
        stream.cart_answers.append(
            ("DELETE /cart", response.status_code, time.monotonic() - started)
        )
        for product in rng.sample(products, k=rng.randint(1, 2)):
            started = time.monotonic()
            response = await client.put(
                f"/cart/items/{product}",
                json={"quantity": rng.randint(1, 3)},
                headers=user.headers,
            )
            stream.cart_answers.append(
                ("PUT /cart/items", response.status_code, time.monotonic() - started)
            )
        roll = rng.random()
        card = DECLINED_CARD if roll < 0.07 else TIMEOUT_CARD if roll < 0.1 else APPROVED_CARD
        attempt = Attempt(index, uuid.uuid4().hex, order_body(card), time.monotonic(), 0.0, "")
        # A checkout still running answers 409 in flight: like a real client, ask again with
        # the same key (once a second, a while) before the next checkout, which would
        # otherwise meet this one as 409 checkout-in-progress.
        for _ in range(IN_FLIGHT_RETRIES):
            try:
                response = await client.post(
                    "/orders",
                    json=attempt.body,
                    headers={**user.headers, "Idempotency-Key": attempt.key},
                )
            except httpx2.HTTPError as exc:
                attempt.status = type(exc).__name__
                break
            attempt.status = response.status_code
            attempt.slug = _slug(response)
            if response.status_code == 201:
                attempt.order = response.json()
            if (attempt.status, attempt.slug) not in NOT_YET:
                break
            await anyio.sleep(1.0)
        attempt.seconds = time.monotonic() - attempt.started
        stream.attempts.append(attempt)
        if attempt.status in {503, 504}:
            await anyio.sleep(0.2)  # a client backs off a little before its next try
        if attempt.order is not None and rng.random() < CANCEL_SHARE:
            order_id = attempt.order["id"]
            try:
                cancel = await client.post(f"/orders/{order_id}/cancel", headers=user.headers)
                stream.cancels[order_id] = cancel.status_code
            except httpx2.HTTPError as exc:
                stream.cancels[order_id] = type(exc).__name__


async def _wait_until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await anyio.sleep(0.05)


async def _probe_outage(client: httpx2.AsyncClient, admin: User, victim: str, product: int) -> None:
    """The victim's own routes answer 503 problem+json within the gateway's budget."""
    path = (
        f"/inventory/{product}" if victim == "inventory" else f"/payments?order_id={uuid.uuid4()}"
    )
    started = time.monotonic()
    response = await client.get(path, headers=admin.headers)
    took = time.monotonic() - started
    assert response.status_code == 503, (path, response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    assert response.json()["type"] == "/problems/service-unavailable", response.text
    assert took < GATEWAY_BUDGET_SECONDS, (path, took)


async def _all_orders(client: httpx2.AsyncClient, user: User) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    offset: int | None = 0
    for _ in range(100):
        if offset is None:
            return orders
        response = await client.get(
            "/orders", params={"limit": 100, "offset": offset}, headers=user.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        orders.extend(page["items"])
        offset = page["next_offset"]
    raise AssertionError("GET /orders never ended")


async def _orders_of(client: httpx2.AsyncClient, users: list[User]) -> list[dict[str, Any]]:
    found: list[list[dict[str, Any]]] = [[] for _ in users]

    async def one(index: int) -> None:
        found[index] = await _all_orders(client, users[index])

    async with anyio.create_task_group() as tasks:
        for index in range(len(users)):
            tasks.start_soon(one, index)
    return [order for orders in found for order in orders]


@pytest.mark.parametrize("victim", ["inventory", "payments"])
async def test_killing_a_service_mid_checkout_keeps_the_invariants(
    faults: Launcher, victim: str
) -> None:
    gateway = faults.gateway_url
    assert gateway is not None
    limits = httpx2.Limits(max_connections=CUSTOMERS * 2 + 8)
    # The client waits well past the gateway's budget: a hang shows up as a ReadTimeout.
    async with httpx2.AsyncClient(
        base_url=gateway, timeout=GATEWAY_BUDGET_SECONDS + 10, limits=limits, trust_env=False
    ) as client:
        token = await login(client, support.ADMIN_EMAIL, support.ADMIN_PASSWORD)
        admin = User("admin", support.ADMIN_EMAIL, support.ADMIN_PASSWORD, "Admin", token)
        category = await create_category(client, admin)
        products = []
        for price, stock in zip(PRICES, INITIAL_STOCK, strict=True):
            product = await create_product(client, admin, category["id"], price=price)
            await set_stock(client, admin, product["id"], stock)
            products.append(product["id"])
        initial = dict(zip(products, INITIAL_STOCK, strict=True))
        customers: list[User] = [None] * CUSTOMERS  # type: ignore[list-item]

        async def register(index: int) -> None:
            customers[index] = await new_customer(client, prefix=f"fault-{victim}")

        async with anyio.create_task_group() as tasks:
            for index in range(CUSTOMERS):
                tasks.start_soon(register, index)

        # ---- the stream, the kill and the restart ------------------------------------
        stream = Stream()
        victim_pids = faults.pids[victim]
        with anyio.fail_after(3 * PHASE_TIMEOUT_SECONDS):
            async with anyio.create_task_group() as tasks:
                for index, user in enumerate(customers):
                    tasks.start_soon(_shopper, client, user, index, products, stream)
                await _wait_until(
                    lambda: stream.confirmed() >= CONFIRMED_BEFORE_KILL,
                    PHASE_TIMEOUT_SECONDS,
                    f"{CONFIRMED_BEFORE_KILL} confirmed checkouts before the kill",
                )
                stream.killed_at = time.monotonic()
                for pid in victim_pids:
                    os.kill(pid, signal.SIGKILL)
                await anyio.sleep(0.3)
                await _probe_outage(client, admin, victim, products[0])
                await anyio.sleep(OUTAGE_SECONDS)
                await _probe_outage(client, admin, victim, products[0])
                await anyio.to_thread.run_sync(faults.start, victim)
                stream.restarted_at = time.monotonic()
                await _wait_until(
                    lambda: (
                        stream.confirmed(after=stream.restarted_at or 0) >= CONFIRMED_AFTER_RESTART
                    ),
                    PHASE_TIMEOUT_SECONDS,
                    f"{CONFIRMED_AFTER_RESTART} confirmed checkouts after the restart",
                )
                stream.stop.set()
        assert not any(pid_alive(pid) for pid in victim_pids)
        assert faults.pids[victim] != victim_pids

        # ---- the stream's answers ----------------------------------------------------
        attempts = stream.attempts
        hung = [a for a in attempts if not isinstance(a.status, int)]
        assert hung == [], f"requests that never got an answer: {hung[:5]}"
        slow = [a for a in attempts if a.seconds >= GATEWAY_BUDGET_SECONDS]
        assert slow == [], f"answers past the gateway's budget: {slow[:5]}"
        assert all(
            _is_outcome(a.status, a.slug) or (a.status, a.slug) in NOT_YET for a in attempts
        ), Counter((a.status, a.slug) for a in attempts)
        assert all(
            (status in {200, 204}) and seconds < GATEWAY_BUDGET_SECONDS
            for _, status, seconds in stream.cart_answers
        ), Counter(status for _, status, _ in stream.cart_answers)
        killed_at, restarted_at = stream.killed_at, stream.restarted_at
        assert killed_at is not None
        assert restarted_at is not None
        during = [a for a in attempts if killed_at <= a.started <= restarted_at]
        assert during, "no checkout was started while the service was down"
        assert not any(a.slug == "checkout-interrupted" for a in during), (
            "a checkout was lost to the outage: " + str(Counter((a.status, a.slug) for a in during))
        )
        unfinished = [a for a in attempts if not _is_outcome(a.status, a.slug)]

        # ---- recovery: no saga left pending ------------------------------------------
        deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
        while True:
            orders = await _orders_of(client, customers)
            pending = [order["id"] for order in orders if order["status"] == "pending"]
            if not pending:
                break
            assert time.monotonic() < deadline, f"still pending after recovery: {pending}"
            await anyio.sleep(0.5)

        # Clients that got no outcome ask again with the same key: they get the outcome.
        for attempt in unfinished:
            user = customers[attempt.customer]
            response = await client.post(
                "/orders",
                json=attempt.body,
                headers={**user.headers, "Idempotency-Key": attempt.key},
            )
            slug = _slug(response)
            assert _is_outcome(response.status_code, slug), (
                attempt.status,
                attempt.slug,
                response.status_code,
                response.text,
            )
            if response.status_code == 201:
                assert response.json()["status"] == "confirmed", response.text
        # Cancels the outage interrupted are finished by asking again (both steps idempotent).
        for order_id, status in stream.cancels.items():
            if status != 200:
                owner = next(a.customer for a in attempts if a.order and a.order["id"] == order_id)
                again = await client.post(
                    f"/orders/{order_id}/cancel", headers=customers[owner].headers
                )
                assert again.status_code == 200, again.text
                assert again.json()["status"] == "cancelled", again.text

        # ---- the invariants ----------------------------------------------------------
        orders = await _orders_of(client, customers)
        by_id = {order["id"]: order for order in orders}
        statuses = Counter(order["status"] for order in orders)
        assert set(statuses) <= {"confirmed", "rejected", "cancelled"}, statuses
        for attempt in attempts:
            if attempt.order is not None:
                final = by_id[attempt.order["id"]]["status"]
                expected = "cancelled" if attempt.order["id"] in stream.cancels else "confirmed"
                assert final == expected, (attempt.order["id"], final, expected)

        payments: dict[str, list[dict[str, Any]]] = {}
        limit = anyio.Semaphore(8)

        async def payments_of(order_id: str) -> None:
            async with limit:
                response = await client.get(
                    "/payments", params={"order_id": order_id, "limit": 100}, headers=admin.headers
                )
            assert response.status_code == 200, response.text
            payments[order_id] = response.json()["items"]

        async with anyio.create_task_group() as tasks:
            for order in orders:
                tasks.start_soon(payments_of, order["id"])

        sold: Counter[int] = Counter()
        for order in orders:
            charges = payments[order["id"]]
            captured = [p for p in charges if p["status"] == "captured"]
            net = sum(p["amount"]["amount"] for p in captured)
            if order["status"] == "confirmed":
                assert len(captured) == 1, (order, charges)
                assert net == order["total"]["amount"], (order, charges)
                for line in order["items"]:
                    sold[line["product_id"]] += line["quantity"]
            else:
                assert net == 0, (order, charges)
                if order["status"] == "cancelled":
                    assert any(p["status"] == "refunded" for p in charges), (order, charges)
                else:
                    assert order["failure_reason"], order

        for product_id in products:
            response = await client.get(f"/inventory/{product_id}", headers=admin.headers)
            assert response.status_code == 200, response.text
            stock = response.json()
            assert stock == {
                "product_id": product_id,
                "on_hand": initial[product_id] - sold[product_id],
                "reserved": 0,
                "available": initial[product_id] - sold[product_id],
            }, (stock, initial[product_id], sold[product_id])
            assert stock["on_hand"] >= 0
        assert statuses["confirmed"] >= CONFIRMED_BEFORE_KILL, statuses
        print(
            f"{victim}: {len(attempts)} checkouts, answers"
            f" {dict(Counter((a.status, a.slug) for a in attempts))}, orders {dict(statuses)},"
            f" {len(unfinished)} replayed, sold {dict(sold)}"
        )
