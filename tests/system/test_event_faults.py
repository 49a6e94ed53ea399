"""Integration events through faults, on real processes of kata step 7 (marked ``rabbitmq``).

The services topology whose bus is RabbitMQ (``topologies/services.toml``), launched on
fresh ports and databases, its exchanges and queues under a prefix of this module's own
(``SHOP_BUS_PREFIX``) on the shared broker, deleted afterwards. Admins change stock and
products through the gateway while something breaks:

1. a consumer service (catalog, then cart) is killed with SIGKILL mid-stream and started
   again;
2. the broker stops (``rabbitmqctl stop_app``) while the writes go on, and comes back;
3. the publisher (inventory) dies between its commits and its relay's publishing: once with
   the broker away (the committed events surely unpublished), once right after a burst.

Afterwards the read models converge to their sources, and this is read in the services' own
databases and through the public API:

- catalog's stock levels (``GET /products/{id}``'s ``available``) equal inventory's
  (``GET /inventory/{id}``); cart's products (a cart's names and prices) equal catalog's;
- no event is lost: every outbox row is published, and each consumer's inbox holds exactly
  the ids its publisher recorded of the types it reads (once each: the id is its key);
- none applied out of turn: each read-model row's ``sequence`` is the newest event's
  position for its aggregate, and its values are that event's;
- the consumers' queues and dead-letter queues are empty.

Each scenario prints how long convergence took once the fault was over (and once the last
write was answered), and asserts it within a generous bound.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import anyio
import anyio.to_thread
import httpx2
import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from composition.app import forget_broker_names
from launcher import Launcher, Timeouts
from shop.cart import models as cart_models
from shop.catalog import models as catalog_models
from shop.inventory import models as inventory_models
from shop.kernel.broker import RabbitBus
from shop.kernel.db import create_engine
from shop.orders import models as orders_models
from shop.payments import models as payments_models
from tests import support
from tests.conftest import rabbitmq_url
from tests.contract.helpers import (
    User,
    create_category,
    create_product,
    login,
    money,
    new_customer,
    set_stock,
)
from tests.system.conftest import (
    GATEWAY_BUDGET_SECONDS,
    assert_contract_suite_passes,
    launched,
    launcher_env,
    require_services,
)

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]

PRODUCTS = 4
WRITERS = 4
PRODUCT_CHANGE_EVERY = 5
"""One write in this many also changes the product's name and price (events for the cart)."""
WRITES_BEFORE_FAULT = 60
WRITES_AFTER_FAULT = 60
OUTAGE_SECONDS = 3.0
"""How long the writes go on while the victim is down, at least."""
BURST = 60
PHASE_TIMEOUT_SECONDS = 60.0
CONVERGE_WITHIN_SECONDS = 60.0
"""Generous: convergence takes a few seconds here (the report prints it)."""
BROKER_COMMAND_TIMEOUT_SECONDS = 90.0
CONSUMED = {
    "catalog": ("inventory", frozenset({"inventory.StockChanged"})),
    "cart": ("catalog", frozenset({"catalog.ProductChanged", "catalog.ProductDeleted"})),
}
"""Each consumer: its publisher and the types it reads (docs/events.md)."""
OUTBOXES: dict[str, Table] = {
    "inventory": inventory_models.outbox,
    "catalog": catalog_models.outbox,
    "orders": orders_models.outbox,
    "payments": payments_models.outbox,
}
INBOXES: dict[str, Table] = {"catalog": catalog_models.inbox, "cart": cart_models.inbox}

needs_rabbitmqctl = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"
)


# --------------------------------------------------------------------------- the deployment


@dataclass(frozen=True)
class Shop:
    launcher: Launcher
    broker_url: str
    bus: RabbitBus
    """Not connected: only its names (the deployment's prefix)."""


@pytest.fixture(scope="module")
def shop(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    signing_key_file: Path,
) -> Iterator[Shop]:
    """Kata step 7 on fresh ports and scratch databases, its bus names under a prefix of this
    module's own on the shared broker (deleted afterwards)."""
    require_services()
    url = rabbitmq_url(request.config)
    assert url is not None, "the rabbitmq tests run only with a broker"
    prefix = f"faults-{uuid.uuid4().hex[:10]}"
    bus = RabbitBus(url, prefix=prefix)
    env = launcher_env(signing_key_file, SHOP_BROKER_URL=url, SHOP_BUS_PREFIX=prefix)
    try:
        with launched(
            "topologies/services.toml",
            tmp_path_factory.mktemp("event-faults"),
            env,
            timeouts=Timeouts(migrate=60.0, ready=60.0, stop=10.0),
        ) as launcher:
            yield Shop(launcher, url, bus)
    finally:
        asyncio.run(forget_broker_names(bus))


# --------------------------------------------------------------------------- the writes


@dataclass
class Catalog:
    """What one scenario made: its products (ids), a customer whose cart holds them all."""

    admin: User
    customer: User
    products: list[int]


async def _prepare(client: httpx2.AsyncClient) -> Catalog:
    token = await login(client, support.ADMIN_EMAIL, support.ADMIN_PASSWORD)
    admin = User("admin", support.ADMIN_EMAIL, support.ADMIN_PASSWORD, "Admin", token)
    category = await create_category(client, admin)
    products = []
    for index in range(PRODUCTS):
        product = await create_product(client, admin, category["id"], price=1000 + index)
        await set_stock(client, admin, product["id"], 100)
        products.append(product["id"])
    customer = await new_customer(client, prefix="event-faults")
    for product_id in products:
        response = await client.put(
            f"/cart/items/{product_id}", json={"quantity": 1}, headers=customer.headers
        )
        assert response.status_code == 200, response.text
    return Catalog(admin, customer, products)


@dataclass
class Stream:
    """Admins' writes through the gateway, until ``stop``: stock levels, now and then a
    product's name and price; every answer counted, by kind and status."""

    answers: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    slowest: float = 0.0
    last_answer: float = 0.0
    stop: anyio.Event = field(default_factory=anyio.Event)

    def written(self, kind: str = "stock") -> int:
        return self.answers[(kind, 200)]


async def _write(
    client: httpx2.AsyncClient,
    stream: Stream,
    kind: str,
    method: str,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> bool:
    started = time.monotonic()
    try:
        response = await client.request(method, path, json=body, headers=headers)
        status: int | str = response.status_code
    except httpx2.HTTPError as exc:
        status = type(exc).__name__
    stream.last_answer = time.monotonic()
    stream.slowest = max(stream.slowest, stream.last_answer - started)
    stream.answers[(kind, status)] += 1
    return status == 200


async def _writer(client: httpx2.AsyncClient, catalog: Catalog, stream: Stream, index: int) -> None:
    rng = random.Random(index)  # a reproducible workload
    step = 0
    while not stream.stop.is_set():
        step += 1
        product = rng.choice(catalog.products)
        ok = await _write(
            client,
            stream,
            "stock",
            "PUT",
            f"/inventory/{product}",
            {"on_hand": rng.randint(0, 1000)},
            catalog.admin.headers,
        )
        if step % PRODUCT_CHANGE_EVERY == 0:
            ok = ok and await _write(
                client,
                stream,
                "product",
                "PATCH",
                f"/products/{product}",
                {"name": f"Product {uuid.uuid4().hex[:8]}", "price": money(rng.randint(1, 9999))},
                catalog.admin.headers,
            )
        if not ok:
            await anyio.sleep(0.1)  # a client backs off a little before its next try


async def _wait_until(
    condition: Callable[[], bool], what: str, within: float = PHASE_TIMEOUT_SECONDS
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await anyio.sleep(0.02)


@asynccontextmanager
async def _streaming(client: httpx2.AsyncClient, catalog: Catalog) -> AsyncIterator[Stream]:
    """Writers running for the body of the block, then stopped; at least
    ``WRITES_BEFORE_FAULT`` stock writes done before the body begins."""
    stream = Stream()
    async with anyio.create_task_group() as tasks:
        for index in range(WRITERS):
            tasks.start_soon(_writer, client, catalog, stream, index)
        await _wait_until(
            lambda: stream.written() >= WRITES_BEFORE_FAULT, "stock writes before the fault"
        )
        yield stream
        stream.stop.set()


async def _more_writes(stream: Stream, count: int) -> None:
    goal = stream.written() + count
    await _wait_until(lambda: stream.written() >= goal, f"{count} more stock writes")


# --------------------------------------------------------------------------- the processes


def _pids(shop: Shop, target: str) -> list[int]:
    """The running pids of a service (every process of it, its worker included) or of one
    process (``catalog-worker``)."""
    return [
        info.pid
        for info in shop.launcher.processes()
        if target in (info.service, info.name) and info.state == "running" and info.pid
    ]


async def _kill(shop: Shop, target: str) -> list[int]:
    """SIGKILL every process of ``target``; returns once the launcher has seen them die."""
    pids = _pids(shop, target)
    assert pids, f"nothing of {target} runs"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    await _wait_until(lambda: not _pids(shop, target), f"{target} seen dead", 10)
    return pids


async def _start(shop: Shop, target: str, killed: list[int]) -> None:
    await anyio.to_thread.run_sync(shop.launcher.start, target)
    assert set(_pids(shop, target)).isdisjoint(killed), f"{target} was not restarted"


async def _rabbitmqctl(*args: str) -> None:
    with anyio.fail_after(BROKER_COMMAND_TIMEOUT_SECONDS):
        await anyio.run_process(["rabbitmqctl", *args])


@asynccontextmanager
async def _broker_stopped() -> AsyncIterator[None]:
    """The broker's application stopped for the body of the block, started again and
    awaited afterwards whatever happens (bounded in time)."""
    try:
        await _rabbitmqctl("stop_app")
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await _rabbitmqctl("start_app")
            await _rabbitmqctl("await_startup", "--timeout", "60")


# --------------------------------------------------------------------------- convergence


class Observer:
    """Reads the services' databases, the broker's queues and the public API, and says what
    still differs between the read models and their sources."""

    def __init__(self, shop: Shop, client: httpx2.AsyncClient, catalog: Catalog) -> None:
        self.shop = shop
        self.client = client
        self.catalog = catalog
        self.engines: dict[str, AsyncEngine] = {
            name: create_engine(url, pool_size=1)
            for name, url in shop.launcher.databases.items()
            if name in {*OUTBOXES, *INBOXES}
        }

    async def aclose(self) -> None:
        for engine in self.engines.values():
            await engine.dispose()

    async def rows(self, service: str, table: Table, *where: Any) -> list[Any]:
        async with self.engines[service].connect() as conn:
            return list((await conn.execute(select(table).where(*where))).mappings())

    async def unpublished(self, publisher: str) -> int:
        outbox = OUTBOXES[publisher]
        async with self.engines[publisher].connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
        return int(count or 0)

    async def unpublished_ids(self, publisher: str) -> set[uuid.UUID]:
        outbox = OUTBOXES[publisher]
        rows = await self.rows(publisher, outbox, outbox.c.published_at.is_(None))
        return {row["event_id"] for row in rows}

    async def applied_before(self, consumer: str, ids: set[uuid.UUID], moment: datetime) -> int:
        """How many of these events ``consumer`` had applied before ``moment``."""
        inbox = INBOXES[consumer]
        rows = await self.rows(consumer, inbox, inbox.c.event_id.in_(ids))
        return sum(1 for row in rows if row["received_at"] < moment)

    async def queued(self) -> dict[str, int]:
        """Ready messages in each consumer's queue and dead-letter queue."""
        return {name: ready for name, (ready, _) in (await self._queues()).items()}

    async def _queues(self) -> dict[str, tuple[int, int]]:
        """Each consumer's queue and dead-letter queue: its ready messages, its consumers."""
        bus = self.shop.bus
        found = {}
        connection = await aio_pika.connect(self.shop.broker_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            for consumer in CONSUMED:
                for name in (bus.queue_name(consumer), bus.dead_queue_name(consumer)):
                    queue = await channel.declare_queue(name, passive=True)
                    result = queue.declaration_result
                    found[name] = (result.message_count or 0, result.consumer_count or 0)
        return found

    async def _get(self, path: str, *, admin: bool = False) -> httpx2.Response:
        headers = self.catalog.admin.headers if admin else {}
        return await self.client.get(path, headers=headers)

    async def differences(self) -> list[str]:
        """Everything that has not converged yet; empty once it all has."""
        found: list[str] = []
        for publisher in OUTBOXES:
            if left := await self.unpublished(publisher):
                found.append(f"{publisher}: {left} outbox rows unpublished")
        newest: dict[str, dict[str, Any]] = {}
        for consumer, (publisher, types) in CONSUMED.items():
            outbox = OUTBOXES[publisher]
            events = await self.rows(publisher, outbox, outbox.c.type.in_(types))
            applied = {row["event_id"] for row in await self.rows(consumer, INBOXES[consumer])}
            recorded = {row["event_id"] for row in events}
            if missing := recorded - applied:
                found.append(f"{consumer}: {len(missing)} of {publisher}'s events not applied")
            if strange := applied - recorded:
                found.append(f"{consumer}: {len(strange)} applied events {publisher} never made")
            latest: dict[str, Any] = {}
            for row in sorted(events, key=lambda row: row["position"]):
                latest[row["aggregate_id"]] = row
            newest[consumer] = latest
        found += await self._stock_levels(newest["catalog"])
        found += await self._cart_products(newest["cart"])
        queues = await self._queues()
        found += [
            f"{name}: {ready} messages waiting" for name, (ready, _) in queues.items() if ready
        ]
        # Each consumer's worker reads its queue, alone: none there is a lost subscription
        # (once, the client's restore after a reconnect dropped it), not a slow one; two
        # would split the queue's order (a service that subscribes beside its worker).
        for consumer in CONSUMED:
            name = self.shop.bus.queue_name(consumer)
            if (consumers := queues[name][1]) != 1:
                found.append(f"{name}: {consumers} consumers, not its worker alone")
        return found

    async def _stock_levels(self, latest: dict[str, Any]) -> list[str]:
        found = []
        levels = {
            str(row["product_id"]): row
            for row in await self.rows("catalog", catalog_models.stock_levels)
        }
        for aggregate, event in latest.items():
            level = levels.get(aggregate)
            if level is None or level["sequence"] != event["position"]:
                found.append(f"catalog stock of {aggregate}: not at event {event['position']}")
            elif level["available"] != event["payload"]["available"]:
                found.append(f"catalog stock of {aggregate}: not the newest event's numbers")
        for product_id in self.catalog.products:
            source = await self._get(f"/inventory/{product_id}", admin=True)
            shown = await self._get(f"/products/{product_id}")
            assert source.status_code == shown.status_code == 200, (source.text, shown.text)
            if source.json()["available"] != shown.json()["available"]:
                found.append(
                    f"product {product_id}: shows {shown.json()['available']} available,"
                    f" inventory has {source.json()['available']}"
                )
        return found

    async def _cart_products(self, latest: dict[str, Any]) -> list[str]:
        found = []
        known = {
            str(row["product_id"]): row for row in await self.rows("cart", cart_models.products)
        }
        for aggregate, event in latest.items():
            row = known.get(aggregate)
            if row is None or row["sequence"] != event["position"]:
                found.append(f"cart's product {aggregate}: not at event {event['position']}")
                continue
            response = await self._get(f"/products/{aggregate}")
            if response.status_code == 404:
                if not row["deleted"]:
                    found.append(f"cart's product {aggregate}: catalog deleted it")
                continue
            assert response.status_code == 200, response.text
            product = response.json()
            if (row["name"], row["price_amount"], row["currency"], row["deleted"]) != (
                product["name"],
                product["price"]["amount"],
                product["price"]["currency"],
                False,
            ):
                found.append(f"cart's product {aggregate}: {dict(row)} is not {product}")
        cart = await self.client.get("/cart", headers=self.catalog.customer.headers)
        assert cart.status_code == 200, cart.text
        for item in cart.json()["items"]:
            product = (await self._get(f"/products/{item['product_id']}")).json()
            if (item["name"], item["unit_price"]) != (product["name"], product["price"]):
                found.append(f"the cart shows {item['product_id']} as {item}, not as {product}")
        return found

    async def converge(self, what: str, *, since: float, stream: Stream | None = None) -> float:
        """Wait until nothing differs; print and return the seconds since ``since`` (the end
        of the fault: the victim ready again, the broker back)."""
        deadline = time.monotonic() + CONVERGE_WITHIN_SECONDS
        while True:
            left = await self.differences()
            if not left:
                break
            assert time.monotonic() < deadline, (
                f"{what}: not converged within {CONVERGE_WITHIN_SECONDS} s: {left[:10]}"
            )
            await anyio.sleep(0.2)
        converged = time.monotonic()
        took = converged - since
        report = f"{what}: converged {took:.2f} s later"
        if stream is not None:
            report += (
                f", {converged - stream.last_answer:.2f} s after the last write; answers"
                f" {dict(stream.answers)}, slowest {stream.slowest:.2f} s"
            )
        print(report)
        return took


@asynccontextmanager
async def _observed(shop: Shop) -> AsyncIterator[tuple[httpx2.AsyncClient, Catalog, Observer]]:
    gateway = shop.launcher.gateway_url
    assert gateway is not None
    limits = httpx2.Limits(max_connections=WRITERS * 2 + 8)
    async with httpx2.AsyncClient(
        base_url=gateway, timeout=GATEWAY_BUDGET_SECONDS + 10, limits=limits, trust_env=False
    ) as client:
        catalog = await _prepare(client)
        observer = Observer(shop, client, catalog)
        try:
            yield client, catalog, observer
        finally:
            await observer.aclose()


def _answered_within_budget(stream: Stream) -> None:
    hung = [key for key in stream.answers if not isinstance(key[1], int)]
    assert hung == [], f"writes that got no answer: {dict(stream.answers)}"
    assert stream.slowest < GATEWAY_BUDGET_SECONDS, stream.slowest


# --------------------------------------------------------------------------- the scenarios


@pytest.mark.parametrize("victim", ["catalog", "cart", "catalog-worker"])
async def test_a_consumer_killed_mid_stream_catches_up(shop: Shop, victim: str) -> None:
    """The consumer dies with events in flight (fetched, maybe applied, not acked); what it
    had not acked is delivered again when it is back, and applied once. A service dies
    with its worker; a worker alone dies with its service still answering."""
    consumer = victim.removesuffix("-worker")
    async with _observed(shop) as (client, catalog, observer):
        async with _streaming(client, catalog) as stream:
            killed = await _kill(shop, victim)
            killed_at = time.monotonic()
            await anyio.sleep(OUTAGE_SECONDS)
            waiting = (await observer.queued())[shop.bus.queue_name(consumer)]
            await _start(shop, victim, killed)
            back_at = time.monotonic()
            await _more_writes(stream, WRITES_AFTER_FAULT)
        _answered_within_budget(stream)
        # Writes that need the victim get 503 while it is down (inventory asks catalog
        # whether a product exists); the others go on.
        statuses = {status for _, status in stream.answers}
        assert statuses <= {200, 503}, dict(stream.answers)
        if victim != "catalog":
            assert statuses == {200}, dict(stream.answers)
        print(f"{victim} down {back_at - killed_at:.1f} s, {waiting} events waited for it")
        took = await observer.converge(f"{victim} back", since=back_at, stream=stream)
        assert took < CONVERGE_WITHIN_SECONDS


@needs_rabbitmqctl
async def test_the_events_wait_in_the_outboxes_while_the_broker_is_away(shop: Shop) -> None:
    """The API keeps answering (writes commit, their events wait in the outbox); the relays
    publish what waited once the broker is back."""
    async with _observed(shop) as (client, catalog, observer):
        async with _streaming(client, catalog) as stream:
            pending = 0
            async with _broker_stopped():
                stopped_at = time.monotonic()
                written = stream.written()
                while time.monotonic() - stopped_at < OUTAGE_SECONDS:
                    pending = max(pending, await observer.unpublished("inventory"))
                    await anyio.sleep(0.2)
                during = stream.written() - written
            back_at = time.monotonic()
            await _more_writes(stream, WRITES_AFTER_FAULT)
        _answered_within_budget(stream)
        assert {status for _, status in stream.answers} == {200}, dict(stream.answers)
        assert during > 0, "no write was answered while the broker was away"
        assert pending > 0, "no event waited in inventory's outbox while the broker was away"
        print(f"broker away: {during} stock writes, up to {pending} events waiting")
        took = await observer.converge("broker back", since=back_at, stream=stream)
        assert took < CONVERGE_WITHIN_SECONDS


async def _burst(client: httpx2.AsyncClient, catalog: Catalog, count: int) -> Stream:
    """``count`` stock writes at once (``WRITERS`` at a time), every one answered 200."""
    stream = Stream()
    limit = anyio.Semaphore(WRITERS * 2)
    rng = random.Random(count)

    async def one(index: int) -> None:
        async with limit:
            await _write(
                client,
                stream,
                "stock",
                "PUT",
                f"/inventory/{catalog.products[index % len(catalog.products)]}",
                {"on_hand": rng.randint(0, 1000)},
                catalog.admin.headers,
            )

    with anyio.fail_after(PHASE_TIMEOUT_SECONDS):
        async with anyio.create_task_group() as tasks:
            for index in range(count):
                tasks.start_soon(one, index)
    assert dict(stream.answers) == {("stock", 200): count}, dict(stream.answers)
    return stream


@needs_rabbitmqctl
async def test_events_committed_before_the_publisher_died_are_published_when_it_is_back(
    shop: Shop,
) -> None:
    """Inventory commits a burst of stock changes, then dies before its relay publishes
    them: its next process's relay publishes them on start. First with the broker away
    (so every event of the burst is surely still in the outbox at the kill), then with it
    up, killed the moment the burst is answered (some rows published, some maybe published
    and not yet marked: those go out twice, and the consumer applies them once)."""
    async with _observed(shop) as (client, catalog, observer):
        async with _broker_stopped():
            burst = await _burst(client, catalog, BURST)
            waiting = await observer.unpublished("inventory")
            assert waiting >= BURST, waiting
            killed = await _kill(shop, "inventory")
        await _start(shop, "inventory", killed)
        back_at = time.monotonic()
        print(f"inventory killed with {waiting} events committed, unpublished (broker away)")
        took = await observer.converge(
            "inventory back (killed, broker away)", since=back_at, stream=burst
        )
        assert took < CONVERGE_WITHIN_SECONDS

        burst = await _burst(client, catalog, BURST)
        killed = await _kill(shop, "inventory")
        unmarked = await observer.unpublished_ids("inventory")  # its database as it died
        restarted = datetime.now(UTC)
        await _start(shop, "inventory", killed)
        back_at = time.monotonic()
        took = await observer.converge(
            "inventory back (killed after a burst)", since=back_at, stream=burst
        )
        # Applied before inventory started again: published by the dead process, not yet
        # marked; its successor published them again, and catalog applied them once.
        twice = await observer.applied_before("catalog", unmarked, restarted)
        print(
            f"inventory killed with {len(unmarked)} events committed, unmarked (broker up);"
            f" {twice} of them had been published already and went out twice"
        )
        assert took < CONVERGE_WITHIN_SECONDS


def test_contract_suite_passes_over_the_broker(shop: Shop, signing_key_file: Path) -> None:
    """The whole black-box suite over TCP through the gateway of the same deployment, after
    its faults: read models behind a real broker answer as the suite expects (it polls where
    a read model answers), and every event its orders, payments and products made converges
    too."""
    assert shop.launcher.gateway_url is not None
    started = time.monotonic()
    assert_contract_suite_passes(shop.launcher.gateway_url, signing_key_file)
    print(f"contract suite over the broker: {time.monotonic() - started:.1f} s")

    async def converged() -> None:
        async with _observed(shop) as (_, _, observer):
            await observer.converge("contract suite done", since=time.monotonic())

    anyio.run(converged)
