"""Checkouts that survive a short outage: no sale lost when a service the checkout calls
restarts.

The services topology behind its gateway, as an operator would try it: 24 customers check
out at once (cards mixed: approved, declined, slow), one service is killed with SIGKILL
mid-burst and started again straight away through the launcher, and every client retries
its checkout with the same Idempotency-Key once a second while the answer is not an outcome
(a 409 in flight, a 502/503/504 from the gateway, a dropped connection), as the API invites.
Then, for each of orders, payments, inventory and cart:

- no checkout is lost: every approved card ends confirmed (before, 3-12 of the 24 answered
  ``503 checkout-interrupted`` to every retry, for good), declined cards ``402``, slow cards
  ``504 payment-timeout``;
- one order per key, none left pending; one capture per confirmed order (of its total) and
  none on the others; stock conserved, nothing left reserved.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
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
from tests.system.conftest import launched, launcher_env, require_services

pytestmark = pytest.mark.anyio

CUSTOMERS = 24
STOCK = 1_000
PRICES = [1999, 2500]
KILL_AFTER_SECONDS = 0.15
"""Into the burst: checkouts are between their steps when the victim dies."""
BACK_WITHIN_SECONDS = 5.0
CLIENT_GIVES_UP_SECONDS = 60.0
OUTCOMES = {201: None, 402: "payment-declined", 504: "payment-timeout"}
"""What each card must end with: approved, declined (0002), slow (0119)."""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, signing_key_file: Path) -> Iterator[Launcher]:
    """The services topology. A checkout's lease is short (3 s: a runner that died is
    taken over soon), recovery looks every second."""
    require_services()
    env = launcher_env(
        signing_key_file,
        ORDERS_RECOVERY_GRACE_SECONDS="3",
        ORDERS_RECOVERY_INTERVAL_SECONDS="1",
    )
    with launched("topologies/services.toml", tmp_path_factory.mktemp("outages"), env) as shop:
        yield shop


def card_of(index: int) -> str:
    return DECLINED_CARD if index % 8 == 3 else TIMEOUT_CARD if index % 8 == 6 else APPROVED_CARD


def expected_status(card: str) -> int:
    return {APPROVED_CARD: 201, DECLINED_CARD: 402, TIMEOUT_CARD: 504}[card]


@dataclass
class Checkout:
    """One customer's checkout, retried by key until it has an outcome."""

    user: User
    card: str
    key: str
    tries: list[tuple[int | str, str | None]]
    seconds: float = 0.0

    @property
    def outcome(self) -> tuple[int | str, str | None]:
        return self.tries[-1]


def _slug(response: httpx2.Response) -> str | None:
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        return str(response.json().get("type", "")).removeprefix("/problems/")
    return None


FINAL_CONFLICTS = {"out-of-stock", "cart-empty", "checkout-interrupted", "order-limit-exceeded"}
"""409 answers that are outcomes (``idempotency-key-in-flight`` is not: ask again)."""


def _is_outcome(status: int | str, slug: str | None) -> bool:
    if status == 409:
        return slug in FINAL_CONFLICTS
    return status in OUTCOMES and slug == OUTCOMES[status]


async def _check_out(client: httpx2.AsyncClient, checkout: Checkout) -> None:
    """POST /orders, then the same request again once a second until it is an outcome."""
    started = time.monotonic()
    while time.monotonic() - started < CLIENT_GIVES_UP_SECONDS:
        try:
            response = await client.post(
                "/orders",
                json=order_body(checkout.card),
                headers={**checkout.user.headers, "Idempotency-Key": checkout.key},
            )
        except httpx2.TransportError as exc:
            checkout.tries.append((type(exc).__name__, None))
        else:
            checkout.tries.append((response.status_code, _slug(response)))
            if _is_outcome(response.status_code, _slug(response)):
                break
        await anyio.sleep(1.0)
    checkout.seconds = time.monotonic() - started


async def _orders_of(client: httpx2.AsyncClient, user: User) -> list[dict[str, Any]]:
    response = await client.get("/orders", params={"limit": 100}, headers=user.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


@pytest.mark.parametrize("victim", ["orders", "payments", "inventory", "cart"])
async def test_no_checkout_is_lost_to_a_restart(shop: Launcher, victim: str) -> None:
    gateway = shop.gateway_url
    assert gateway is not None
    limits = httpx2.Limits(max_connections=CUSTOMERS * 2 + 8)
    async with httpx2.AsyncClient(
        base_url=gateway, timeout=30.0, limits=limits, trust_env=False
    ) as client:
        token = await login(client, support.ADMIN_EMAIL, support.ADMIN_PASSWORD)
        admin = User("admin", support.ADMIN_EMAIL, support.ADMIN_PASSWORD, "Admin", token)
        category = await create_category(client, admin)
        products: list[int] = []
        for price in PRICES:
            product = await create_product(client, admin, category["id"], price=price)
            await set_stock(client, admin, product["id"], STOCK)
            products.append(product["id"])
        checkouts: list[Checkout] = []
        for index in range(CUSTOMERS):
            user = await new_customer(client, prefix=f"outage-{victim}")
            for product_id in products[: 1 + index % 2]:
                response = await client.put(
                    f"/cart/items/{product_id}", json={"quantity": 2}, headers=user.headers
                )
                assert response.status_code == 200, response.text
            checkouts.append(Checkout(user, card_of(index), uuid.uuid4().hex, []))

        # ---- the burst, the kill, the restart -------------------------------------------
        victim_pids = shop.pids[victim]
        with anyio.fail_after(CLIENT_GIVES_UP_SECONDS + 30):
            async with anyio.create_task_group() as tasks:
                for checkout in checkouts:
                    tasks.start_soon(_check_out, client, checkout)
                await anyio.sleep(KILL_AFTER_SECONDS)
                for pid in victim_pids:
                    os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                for _ in range(500):  # until the launcher has seen them die (at most 5 s)
                    if victim not in shop.pids:
                        break
                    await anyio.sleep(0.01)
                await anyio.to_thread.run_sync(shop.start, victim)
                back = time.monotonic() - killed
        assert set(shop.pids[victim]).isdisjoint(victim_pids), "not restarted"
        assert back < BACK_WITHIN_SECONDS, f"{victim} took {back:.1f} s to be back"

        # ---- no checkout lost ----------------------------------------------------------
        outcomes = Counter(checkout.outcome for checkout in checkouts)
        report = (
            f"{victim} back in {back:.1f} s; outcomes {dict(outcomes)}; answers seen"
            f" {dict(Counter(t for c in checkouts for t in c.tries))}; slowest"
            f" {max(c.seconds for c in checkouts):.1f} s"
        )
        print(report)
        for checkout in checkouts:
            status, slug = checkout.outcome
            assert status == expected_status(checkout.card), (checkout.card, checkout.tries, report)
            assert slug == OUTCOMES[expected_status(checkout.card)], (checkout.tries, report)

        # ---- the invariants ------------------------------------------------------------
        sold: Counter[int] = Counter()
        for checkout in checkouts:
            orders = await _orders_of(client, checkout.user)
            assert len(orders) == 1, orders  # one order per key
            (order,) = orders
            expected = "confirmed" if checkout.card == APPROVED_CARD else "rejected"
            assert order["status"] == expected, order
            response = await client.get(
                "/payments", params={"order_id": order["id"]}, headers=admin.headers
            )
            assert response.status_code == 200, response.text
            captured = [p for p in response.json()["items"] if p["status"] == "captured"]
            if expected == "confirmed":
                assert [p["amount"] for p in captured] == [order["total"]], response.text
                for line in order["items"]:
                    sold[line["product_id"]] += line["quantity"]
            else:
                assert captured == [], response.text
        for product_id in products:
            response = await client.get(f"/inventory/{product_id}", headers=admin.headers)
            assert response.status_code == 200, response.text
            assert response.json() == {
                "product_id": product_id,
                "on_hand": STOCK - sold[product_id],
                "reserved": 0,
                "available": STOCK - sold[product_id],
            }
