"""The shopper workload: one Locust file that drives any deployment of the shop by --host.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000            # web UI
    locust -f loadtests/locustfile.py --headless -u 32 -r 32 -t 30s --host URL

Each simulated user registers once (``on_start``), then browses and searches the catalog
most of the time, looks at products, changes its cart, checks out now and then and looks
at its past orders. Every response is checked (``loadtests/checks.py``): a wrong body is a
failure, not just a wrong status. URLs with ids are grouped under one name
(``/products/[id]``).

The catalog must be seeded (``python -m loadtests.seed``: 1,000 products, 100,000 units
each); a shopper buys 1-3 units at a time, so no run of the benchmark comes near selling out.

Environment:

- ``LOADTEST_SCENARIO``: ``shopper`` (default), ``product`` (anonymous ``GET
  /products/{id}`` only, for the gateway tax) or ``health`` (``GET /healthz`` only, the
  trivial endpoint of the reference ceiling).
- ``LOADTEST_WAIT``: think time between tasks in seconds, ``MIN-MAX`` or one number
  (default ``0.5-2``; the benchmark sets ``0``: closed loop, each user one request at a time),
  or ``rate:R``: each user runs at most R tasks a second (the benchmark's fixed-rate step).
- ``LOADTEST_PASSWORD``: the shoppers' password (default ``loadtest-password``).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, between, constant, constant_throughput, task
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from loadtests import checks  # (importable because of the line above)
from loadtests.seed import MATERIALS, NOUNS

SCENARIO = os.environ.get("LOADTEST_SCENARIO", "shopper")
PASSWORD = os.environ.get("LOADTEST_PASSWORD", "loadtest-password")
CARD = "4242424242424242"
ADDRESS = {
    "name": "Load Tester",
    "line1": "1 Benchmark Road",
    "city": "London",
    "postal_code": "NW1 6XE",
    "country": "GB",
}
SORTS = ["id", "name", "-name", "price", "-price", "newest"]
SEARCH_WORDS = [*MATERIALS, *NOUNS]
BROWSE_PAGES = 5
SETTLE_ATTEMPTS = 3  # resends of a cart write that failed with 5xx
BUSY_WAITS = 30  # sign-in flood: times a shopper waits for Retry-After before giving up
"""Browsing looks at the first few pages of a category (50 products at 20 a page)."""


def parse_wait(text: str) -> tuple[float, float]:
    """``"0.5-2"`` -> (0.5, 2.0); ``"0"`` -> (0.0, 0.0)."""
    low, _, high = text.partition("-")
    first = float(low)
    second = float(high) if high else first
    if first < 0 or second < first:
        raise ValueError(f"LOADTEST_WAIT={text!r}: want MIN-MAX with 0 <= MIN <= MAX")
    return first, second


def _wait() -> Any:
    text = os.environ.get("LOADTEST_WAIT", "0.5-2")
    if text.startswith("rate:"):
        # A fixed rate: each user runs at most this many tasks a second (open-ish loop).
        return constant_throughput(float(text.removeprefix("rate:")))
    low, high = parse_wait(text)
    return constant(low) if low == high else between(low, high)


def _body(response: Any) -> Any:
    try:
        return response.json()
    except (ValueError, TypeError):
        return None


def _busy(response: Any) -> float | None:
    """The ``Retry-After`` of a 503 ``sign-in-busy``: identity's answer to a flood of
    sign-ins (more password hashes at once than it computes, docs/api.md). It is the promised
    answer, not a failure: a client waits that long and asks again, as a shopper does here
    when a whole ladder step of them signs up in the same second."""
    if response.status_code != 503:
        return None
    body = _body(response)
    if not isinstance(body, dict) or not str(body.get("type", "")).endswith("/sign-in-busy"):
        return None
    return _retry_after(response)


def _in_flight(response: Any) -> float | None:
    """The ``Retry-After`` of a 409 ``idempotency-key-in-flight``: the checkout under that
    key is still running, and asking again with the same key gets its outcome."""
    if response.status_code != 409:
        return None
    body = _body(response)
    if not isinstance(body, dict) or not str(body.get("type", "")).endswith(
        "/idempotency-key-in-flight"
    ):
        return None
    return _retry_after(response)


def _retry_after(response: Any) -> float:
    try:
        return max(0.1, float(response.headers.get("Retry-After") or 1))
    except ValueError:
        return 1.0


class _ShopUser(FastHttpUser):
    abstract = True
    wait_time = _wait()

    def check(self, response: Any, reason: str | None) -> bool:
        """Mark the response failed with the reason (and the start of its body)."""
        if reason is None:
            response.success()
            return True
        text = (response.text or "")[:200] if hasattr(response, "text") else ""
        response.failure(f"{reason}: {text}")
        return False


class ShopperUser(_ShopUser):
    """A registered customer with the traffic mix of a shop: mostly reading."""

    abstract = SCENARIO != "shopper"

    def on_start(self) -> None:
        self.product_ids: list[int] = []
        self.category_slugs: list[str] = []
        self.cart: dict[int, int] = {}
        self.order_ids: list[str] = []
        self.token = ""
        email = f"shopper-{uuid.uuid4().hex}@loadtest.example"
        body = {"email": email, "password": PASSWORD, "name": "Load Shopper"}
        for _ in range(BUSY_WAITS):
            with self.client.post(
                "/auth/register", json=body, name="/auth/register", catch_response=True
            ) as response:
                if (delay := _busy(response)) is not None:
                    response.success()
                    time.sleep(delay)  # cooperative: Locust runs on gevent
                    continue
                self.check(
                    response,
                    checks.check_registered(response.status_code, _body(response), email=email),
                )
                # A 5xx leaves the account's creation unknown: it may still land.
                unknown = response.status_code >= 500 or response.status_code == 0
                break
        else:
            raise StopUser
        self._sign_in(email, body, registration_unknown=unknown)
        self.categories()
        self.browse()

    def _sign_in(self, email: str, body: dict[str, str], *, registration_unknown: bool) -> None:
        """Log in; after a registration whose outcome is unknown, register again first when
        the login says the account does not exist (201 or 409 both mean it exists now). A
        shopper that cannot sign in stops, instead of sending every request without a token."""
        form = urlencode({"username": email, "password": PASSWORD})
        attempts = busy_waits = 0
        while attempts < SETTLE_ATTEMPTS:
            with self.client.post(
                "/auth/token",
                data=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                name="/auth/token",
                catch_response=True,
            ) as response:
                payload = _body(response)
                if (delay := _busy(response)) is not None and busy_waits < BUSY_WAITS:
                    response.success()
                    busy_waits += 1
                    time.sleep(delay)  # cooperative: Locust runs on gevent
                    continue
                attempts += 1
                if registration_unknown and response.status_code == 401:
                    response.success()  # right answer: the account is not there (yet)
                elif self.check(response, checks.check_token(response.status_code, payload)):
                    self.token = payload["access_token"]
                    return
                elif response.status_code < 500:
                    break
            if registration_unknown:
                with self.client.post(
                    "/auth/register",
                    json=body,
                    name="/auth/register retry",
                    catch_response=True,
                ) as response:
                    if response.status_code in (201, 409):
                        response.success()
                        registration_unknown = False
        raise StopUser

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _remember(self, page: Any) -> None:
        for item in page["items"]:
            if item["id"] not in self.product_ids:
                self.product_ids.append(item["id"])

    def _some_product(self) -> int:
        return random.choice(self.product_ids) if self.product_ids else 1  # noqa: S311

    @task(2)
    def categories(self) -> None:
        with self.client.get("/categories", name="/categories", catch_response=True) as response:
            body = _body(response)
            if self.check(response, checks.check_categories(response.status_code, body)):
                self.category_slugs = [category["slug"] for category in body]

    @task(30)
    def browse(self) -> None:
        params: dict[str, Any] = {
            "sort": random.choice(SORTS),  # noqa: S311
            "limit": 20,
            "offset": 20 * random.randrange(BROWSE_PAGES),  # noqa: S311
        }
        if self.category_slugs:
            params["category"] = random.choice(self.category_slugs)  # noqa: S311
        with self.client.get(
            f"/products?{urlencode(params)}", name="/products?category", catch_response=True
        ) as response:
            body = _body(response)
            reason = checks.check_product_page(
                response.status_code, body, limit=20, sort=params["sort"]
            )
            if self.check(response, reason):
                self._remember(body)

    @task(20)
    def search(self) -> None:
        word = random.choice(SEARCH_WORDS)  # noqa: S311
        params = {"q": word, "limit": 10, "sort": "price"}
        with self.client.get(
            f"/products?{urlencode(params)}", name="/products?q", catch_response=True
        ) as response:
            body = _body(response)
            reason = checks.check_product_page(
                response.status_code, body, limit=10, query=word, sort="price"
            )
            if self.check(response, reason):
                self._remember(body)

    @task(25)
    def view_product(self) -> None:
        product_id = self._some_product()
        with self.client.get(
            f"/products/{product_id}", name="/products/[id]", catch_response=True
        ) as response:
            reason = checks.check_product_detail(
                response.status_code, _body(response), product_id=product_id
            )
            self.check(response, reason)

    @task(8)
    def view_cart(self) -> None:
        with self.client.get(
            "/cart", headers=self.auth, name="/cart", catch_response=True
        ) as response:
            self.check(response, checks.check_cart(response.status_code, _body(response)))

    @task(8)
    def add_to_cart(self) -> None:
        product_id = self._some_product()
        quantity = random.randint(1, 3)  # noqa: S311
        with self.client.put(
            f"/cart/items/{product_id}",
            data=json.dumps({"quantity": quantity}),
            headers={**self.auth, "Content-Type": "application/json"},
            name="/cart/items/[id]",
            catch_response=True,
        ) as response:
            reason = checks.check_cart(
                response.status_code, _body(response), expect_line=(product_id, quantity)
            )
            if self.check(response, reason):
                self.cart[product_id] = quantity
            elif response.status_code >= 500:
                self._settle("PUT", product_id, quantity)

    @task(2)
    def remove_from_cart(self) -> None:
        if not self.cart:
            self.add_to_cart()
            return
        product_id = random.choice(list(self.cart))  # noqa: S311
        with self.client.delete(
            f"/cart/items/{product_id}",
            headers=self.auth,
            name="/cart/items/[id] DELETE",
            catch_response=True,
        ) as response:
            body = _body(response)
            reason = checks.check_cart(response.status_code, body)
            if reason is None and any(line["product_id"] == product_id for line in body["items"]):
                reason = f"product {product_id} still in the cart after DELETE"
            if self.check(response, reason):
                self.cart.pop(product_id, None)
            elif response.status_code >= 500:
                self._settle("DELETE", product_id, 0)

    def _settle(self, method: str, product_id: int, quantity: int) -> None:
        """A cart write that failed with 5xx may still be applied later (it may sit in a queue
        behind the timeout): send it again until it succeeds, as a client would. Both writes
        are idempotent (PUT sets the quantity, DELETE removes the line), so the late original
        changes nothing once the retry has landed, and the shopper's view stays exact. Each
        retry is a request of its own in the statistics, failures included."""
        for _ in range(SETTLE_ATTEMPTS):
            response = self.client.request(
                method,
                f"/cart/items/{product_id}",
                data=json.dumps({"quantity": quantity}) if method == "PUT" else None,
                headers={**self.auth, "Content-Type": "application/json"},
                name=f"/cart/items/[id] {method} retry",
            )
            if response.status_code == 200:
                self._hold_cart(response)
                return
            if response.status_code < 500:
                break
        self._resync_cart()

    def _resync_cart(self) -> None:
        """The cart as the server holds it now (after a write whose outcome is unknown)."""
        response = self.client.get("/cart", headers=self.auth, name="/cart")
        if response.status_code == 200:
            self._hold_cart(response)

    def _hold_cart(self, response: Any) -> None:
        """Believe the cart a 200 answer shows."""
        items = json.loads(response.content or b"{}").get("items", [])
        self.cart = {line["product_id"]: line["quantity"] for line in items}

    @task(3)
    def checkout(self) -> None:
        if not self.cart:
            self.add_to_cart()
            if not self.cart:
                return
        body = {"card_number": CARD, "shipping_address": ADDRESS}
        key = uuid.uuid4().hex
        for attempt in range(1, BUSY_WAITS + 1):
            with self.client.post(
                "/orders",
                json=body,
                headers={**self.auth, "Idempotency-Key": key},
                name="/orders POST",
                catch_response=True,
            ) as response:
                delay = _in_flight(response)
                if delay is not None and attempt < BUSY_WAITS:
                    # The checkout runs on (a step waits on a slow service): its key's
                    # outcome is asked again after Retry-After, as docs/api.md tells a
                    # client to. The last answer counts as it is.
                    response.success()
                    time.sleep(delay)  # cooperative: Locust runs on gevent
                    continue
                payload = _body(response)
                reason = checks.check_order(response.status_code, payload, expected_status=201)
                if reason is None:
                    bought = {line["product_id"]: line["quantity"] for line in payload["items"]}
                    if bought != self.cart:
                        reason = f"order holds {bought}, the cart held {self.cart}"
                if self.check(response, reason):
                    self.order_ids.append(payload["id"])
                self.cart.clear()  # emptied by a checkout; a failed one is resynced below
                break
        if reason is not None:
            self.client.delete("/cart", headers=self.auth, name="/cart DELETE")

    @task(3)
    def past_orders(self) -> None:
        with self.client.get(
            "/orders?limit=10", headers=self.auth, name="/orders", catch_response=True
        ) as response:
            self.check(response, checks.check_order_page(response.status_code, _body(response)))

    @task(1)
    def view_order(self) -> None:
        if not self.order_ids:
            self.past_orders()
            return
        order_id = random.choice(self.order_ids)  # noqa: S311
        with self.client.get(
            f"/orders/{order_id}", headers=self.auth, name="/orders/[id]", catch_response=True
        ) as response:
            payload = _body(response)
            reason = checks.check_order(response.status_code, payload)
            if reason is None and payload["id"] != order_id:
                reason = f"asked for order {order_id}, got {payload['id']}"
            self.check(response, reason)


class ProductUser(_ShopUser):
    """Anonymous ``GET /products/{id}`` only: the gateway tax (direct vs through it)."""

    abstract = SCENARIO != "product"

    # The seed is deterministic (SEED-00001 is product 1, and every run seeds at least 100):
    # no listing first, so that this scenario is product views only, and the reference app
    # (bench/reference.py), which serves nothing else, can take it too.
    product_ids = range(1, 101)

    @task
    def view_product(self) -> None:
        product_id = random.choice(self.product_ids)  # noqa: S311
        with self.client.get(
            f"/products/{product_id}", name="/products/[id]", catch_response=True
        ) as response:
            reason = checks.check_product_detail(
                response.status_code, _body(response), product_id=product_id
            )
            self.check(response, reason)


class HealthUser(_ShopUser):
    """``GET /healthz`` only: the same server stack with no work behind it (the ceiling)."""

    abstract = SCENARIO != "health"

    @task
    def health(self) -> None:
        with self.client.get("/healthz", name="/healthz", catch_response=True) as response:
            self.check(response, checks.check_health(response.status_code, _body(response)))
