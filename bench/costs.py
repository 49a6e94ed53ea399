"""``python -m bench.costs``: what each kind of shopper request costs the servers, monolith and
services side by side, and where the services' extra CPU per shopper request comes from.

Both topologies run at once (the monolith, and the services behind the gateway, each seeded
with ``--products`` products), every server pinned to CPU 0 and this program to CPU 1. For
each task of the shopper mix (``loadtests/locustfile.py``, ``ShopperUser``) it sends
``--requests`` such requests, 4 at a time, to one topology, then to the other (the order
alternates from task to task and round to round), and reads every server process's CPU
from /proc around the window. A window ends once the consumers have applied every event the
requests caused (no event applied for half a second), and each process's idle CPU (relays
and recovery loops polling, measured before the first window) is taken off. What a request
needs first (a filled cart before a checkout, a line before its removal, an order to look
at) is done before the window, not in it.

It prints, per task: server CPU microseconds per request in each topology, the ratio, and
the services' figure by process. Then the mix: each task weighted as the shopper mix weighs
it, the services / monolith CPU per shopper request, and each task's share of the services'
extra CPU. On one core, throughput is 1 / CPU per request, so this says what the
throughput ratio of ``make bench`` can at best become, and which requests decide it.
A program, not a test; process CPU is read in 10 ms ticks.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import itertools
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2

from bench import procs
from bench.deploy import REPO, Deployment, monolith, say, services
from bench.lag import drain
from bench.plans import Plan
from bench.runner import alternated
from loadtests.seed import MATERIALS, NOUNS

LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
SHOPPER_CLASS = "ShopperUser"
IN_FLIGHT = 4
PASSWORD = "costs-password"  # noqa: S105 (the probe's own shoppers)
CARD = "4242424242424242"
ADDRESS = {
    "name": "Cost Probe",
    "line1": "1 Benchmark Road",
    "city": "London",
    "postal_code": "NW1 6XE",
    "country": "GB",
}
CART_PRODUCTS = 60
"""Products a shopper's cart cycles through (a cart holds at most 100 different ones)."""


def mix_weights(path: Path = LOCUSTFILE, cls: str = SHOPPER_CLASS) -> dict[str, int]:
    """The ``@task(n)`` weight of every task of the shopper class, read from its source
    (importing the locustfile would import Locust, which patches the standard library)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            weights = {}
            for item in node.body:
                if not isinstance(item, ast.FunctionDef):
                    continue
                for decorator in item.decorator_list:
                    if (
                        isinstance(decorator, ast.Call)
                        and getattr(decorator.func, "id", "") == "task"
                    ):
                        weights[item.name] = int(ast.literal_eval(decorator.args[0]))
                    elif isinstance(decorator, ast.Name) and decorator.id == "task":
                        weights[item.name] = 1
            return weights
    raise LookupError(f"{path}: no class {cls}")


@dataclass
class Shopper:
    """A registered customer of one topology, and what it has there."""

    headers: dict[str, str]
    orders: list[str] = field(default_factory=list)


Job = Callable[[httpx2.AsyncClient], Awaitable[httpx2.Response]]
Prepare = Callable[[httpx2.AsyncClient, Sequence[Shopper], int], Awaitable[list[Job]]]
"""Makes a window's ``n`` jobs ready, doing before it what they need first."""


@dataclass(frozen=True)
class Task:
    """One task of the shopper mix: the jobs of a window, made ready before it."""

    name: str
    prepare: Prepare
    expect: int = 200
    buyers: bool = False
    """Sent by the shoppers who check out (and so have orders to read), not the browsers."""


def _get(
    path: str, params: Mapping[str, str | int] | None = None, headers: dict[str, str] | None = None
) -> Job:
    return lambda client: client.get(path, params=params, headers=headers)


def _simple(make: Callable[[int, Shopper], Job]) -> Prepare:
    async def prepare(client: httpx2.AsyncClient, shoppers: Sequence[Shopper], n: int) -> list[Job]:
        return [make(i, shoppers[i % len(shoppers)]) for i in range(n)]

    return prepare


SORTS = ("id", "name", "-name", "price", "-price", "newest")
WORDS = (*MATERIALS, *NOUNS)
"""What shoppers search for (the seed's words, as in the locustfile)."""


async def _browsing(client: httpx2.AsyncClient, shoppers: Sequence[Shopper], n: int) -> list[Job]:
    """A category's pages in every order, as the locustfile's shoppers browse (the categories
    asked for before the window)."""
    slugs = [category["slug"] for category in (_ok(await client.get("/categories"))).json()]
    return [
        _get(
            "/products",
            {
                "category": slugs[i % len(slugs)],
                "sort": SORTS[i % len(SORTS)],
                "limit": 20,
                "offset": 20 * (i % 5),
            },
        )
        for i in range(n)
    ]


def _put(product_id: int, quantity: int, shopper: Shopper) -> Job:
    return lambda client: client.put(
        f"/cart/items/{product_id}", json={"quantity": quantity}, headers=shopper.headers
    )


async def _filled_carts(
    client: httpx2.AsyncClient, shoppers: Sequence[Shopper], n: int
) -> list[Job]:
    """One line in each of ``n`` shoppers' carts (put before the window); the checkouts."""
    for i, shopper in enumerate(shoppers[:n]):
        _ok(await _put(1 + i % CART_PRODUCTS, 1, shopper)(client))
    return [_checkout(shopper) for shopper in shoppers[:n]]


def _checkout(shopper: Shopper) -> Job:
    """Checks the shopper's cart out, and remembers the order for ``view_order``."""

    async def job(client: httpx2.AsyncClient) -> httpx2.Response:
        response = await client.post(
            "/orders",
            json={"card_number": CARD, "shipping_address": ADDRESS},
            headers={**shopper.headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        if response.status_code == 201:
            shopper.orders.append(response.json()["id"])
        return response

    return job


async def _lines_to_remove(
    client: httpx2.AsyncClient, shoppers: Sequence[Shopper], n: int
) -> list[Job]:
    """Lines put before the window (spread over the shoppers, each line once); their
    removals."""
    if n > len(shoppers) * CART_PRODUCTS:
        raise ValueError(f"{n} removals need more than {len(shoppers)} shoppers")
    jobs: list[Job] = []
    for i in range(n):
        shopper = shoppers[i % len(shoppers)]
        product_id = 1 + (i // len(shoppers)) % CART_PRODUCTS
        _ok(await _put(product_id, 1, shopper)(client))
        jobs.append(_delete(product_id, shopper))
    return jobs


def _delete(product_id: int, shopper: Shopper) -> Job:
    return lambda client: client.delete(f"/cart/items/{product_id}", headers=shopper.headers)


async def _orders_to_view(
    client: httpx2.AsyncClient, shoppers: Sequence[Shopper], n: int
) -> list[Job]:
    owned = [(shopper, order) for shopper in shoppers for order in shopper.orders]
    if not owned:
        raise RuntimeError("view_order needs orders: run the checkout task first")
    return [
        _get(f"/orders/{order}", headers=shopper.headers)
        for shopper, order in itertools.islice(itertools.cycle(owned), n)
    ]


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("categories", _simple(lambda i, s: _get("/categories"))),
        Task("browse", _browsing),
        Task(
            "search",
            _simple(
                lambda i, s: _get(
                    "/products", {"q": WORDS[i % len(WORDS)], "limit": 10, "sort": "price"}
                )
            ),
        ),
        Task("view_product", _simple(lambda i, s: _get(f"/products/{1 + (i * 7) % 150}"))),
        Task("view_cart", _simple(lambda i, s: _get("/cart", headers=s.headers))),
        Task("add_to_cart", _simple(lambda i, s: _put(1 + i % CART_PRODUCTS, 1 + i % 3, s))),
        Task("remove_from_cart", _lines_to_remove, buyers=True),
        Task("checkout", _filled_carts, expect=201, buyers=True),
        Task(
            "past_orders",
            _simple(lambda i, s: _get("/orders", {"limit": 10}, headers=s.headers)),
            buyers=True,
        ),
        Task("view_order", _orders_to_view, buyers=True),
    )
}
"""The shopper mix's tasks, in the order they run (checkout before the orders are read)."""


def _ok(response: httpx2.Response, expect: int = 200) -> httpx2.Response:
    if response.status_code != expect:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code}"
            f" {response.text[:300]}"
        )
    return response


async def register(url: str, count: int) -> list[Shopper]:
    """``count`` new customers of the topology at ``url``, signed in."""
    shoppers = []
    async with httpx2.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(count):
            email = f"costs-{uuid.uuid4().hex}@bench.example"
            _ok(
                await client.post(
                    "/auth/register",
                    json={"email": email, "password": PASSWORD, "name": "Cost Probe"},
                ),
                201,
            )
            token = _ok(
                await client.post("/auth/token", data={"username": email, "password": PASSWORD})
            )
            shoppers.append(Shopper({"Authorization": f"Bearer {token.json()['access_token']}"}))
    return shoppers


async def run_jobs(url: str, jobs: Sequence[Job], expect: int) -> None:
    """Every job, ``IN_FLIGHT`` at a time; each answer must have status ``expect``."""
    pending = list(reversed(jobs))
    async with httpx2.AsyncClient(base_url=url, timeout=60) as client:

        async def lane() -> None:
            while pending:
                _ok(await pending.pop()(client), expect)

        await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))


async def prepared(url: str, task: Task, shoppers: Sequence[Shopper], n: int) -> list[Job]:
    async with httpx2.AsyncClient(base_url=url, timeout=60) as client:
        return await task.prepare(client, shoppers, n)


@dataclass
class Probe:
    """One topology under the probe: its shoppers, idle CPU, and the windows' figures."""

    deployment: Deployment
    browsers: list[Shopper]
    buyers: list[Shopper]
    """One per checkout of a window: each checks out a cart of its own."""
    idle: dict[str, float] = field(default_factory=dict)
    """CPU seconds per second of each process with no request coming."""
    samples: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    """Per task, per window: CPU microseconds per request of each process."""

    def measure_idle(self, seconds: float) -> None:
        before = self.deployment.cpu_by_process()
        time.sleep(seconds)
        after = self.deployment.cpu_by_process()
        self.idle = {name: (after[name] - before[name]) / seconds for name in after}

    def window(self, task: Task, n: int) -> None:
        url = self.deployment.url
        shoppers = self.buyers if task.buyers else self.browsers
        jobs = asyncio.run(prepared(url, task, shoppers, n))
        if self.deployment.consumers:
            drain(self.deployment.consumers, quiet=0.5, every=0.1)
        before, started = self.deployment.cpu_by_process(), time.monotonic()
        asyncio.run(run_jobs(url, jobs, task.expect))
        if self.deployment.consumers:
            drain(self.deployment.consumers, quiet=0.5, every=0.1)
        after, elapsed = self.deployment.cpu_by_process(), time.monotonic() - started
        self.samples.setdefault(task.name, []).append(
            {
                name: max(0.0, after[name] - before[name] - self.idle.get(name, 0.0) * elapsed)
                * 1e6
                / len(jobs)
                for name in after
            }
        )

    def cost(self, task: str) -> dict[str, float]:
        """Median over the windows of each process's CPU us per request of ``task``."""
        windows = self.samples[task]
        return {name: statistics.median(w[name] for w in windows) for name in windows[0]}


def mix(
    weights: Mapping[str, int], monolith_us: Mapping[str, float], services_us: Mapping[str, float]
) -> tuple[float, float, dict[str, float]]:
    """CPU us per shopper request of each topology (tasks weighted as in the mix), and
    each task's share of the services' extra CPU (shares of the total difference)."""
    total = sum(weights.values())
    mono = sum(weights[t] * monolith_us[t] for t in weights) / total
    serv = sum(weights[t] * services_us[t] for t in weights) / total
    extra = serv - mono
    shares = {
        t: (weights[t] * (services_us[t] - monolith_us[t]) / total) / extra if extra else 0.0
        for t in weights
    }
    return mono, serv, shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="per task and window")
    parser.add_argument("--checkouts", type=int, default=100, help="per window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per task and topology")
    parser.add_argument("--products", type=int, default=1000, help="seeded (make bench: 1,000)")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if min(args.requests, args.checkouts, args.rounds) < 1:
        parser.error("--requests, --checkouts and --rounds must be 1 or more")
    out = args.out or REPO / "bench" / "results" / f"costs-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    weights = mix_weights()
    missing = set(weights) ^ set(TASKS)
    if missing:
        raise SystemExit(f"the shopper mix and bench.costs disagree on tasks: {sorted(missing)}")
    plan = Plan(ladder=(1,), seconds=1, repeats=1, warmup_seconds=1, products=args.products)
    pinned = (os.cpu_count() or 1) >= 2
    if pinned:
        os.sched_setaffinity(0, {1})
    started = time.monotonic()
    say(f"results in {out}; load {procs.load_average()}")
    with ExitStack() as stack:
        probes = []
        for deployment in (
            stack.enter_context(monolith(out, plan)),
            stack.enter_context(services(out, plan)),
        ):
            if pinned:
                procs.pin([p for pids in deployment.pids().values() for p in pids], {0})
            say(f"{deployment.name}: registering {IN_FLIGHT + args.checkouts} shoppers")
            probes.append(
                Probe(
                    deployment,
                    browsers=asyncio.run(register(deployment.url, IN_FLIGHT)),
                    buyers=asyncio.run(register(deployment.url, args.checkouts)),
                )
            )
        for probe in probes:  # warm both up, then let them settle
            url = probe.deployment.url
            warm = asyncio.run(prepared(url, TASKS["view_product"], probe.browsers, 200))
            asyncio.run(run_jobs(url, warm, 200))
        for probe in probes:
            probe.measure_idle(args.idle_seconds)
        turns = itertools.count()
        for round_ in range(1, args.rounds + 1):
            for task in TASKS.values():
                n = args.checkouts if task.name == "checkout" else args.requests
                for probe in alternated(probes, next(turns)):
                    probe.window(task, n)
                say(f"round {round_}: {task.name} ({n} requests a side)")
        report = render(weights, probes[0], probes[1], args)
    print(report)
    (out / "costs.md").write_text(report)
    say(f"done in {time.monotonic() - started:.0f} s; {out / 'costs.md'}")
    return 0


def render(weights: Mapping[str, int], mono: Probe, serv: Probe, args: argparse.Namespace) -> str:
    names = [name for name in serv.idle if name != "monolith"]
    mono_us = {t: sum(mono.cost(t).values()) for t in TASKS}
    serv_cost = {t: serv.cost(t) for t in TASKS}
    serv_us = {t: sum(serv_cost[t].values()) for t in TASKS}
    lines = [
        f"Server CPU us per request, medians of {args.rounds} interleaved windows"
        f" ({args.requests} requests a window, {args.checkouts} checkouts; {IN_FLIGHT} in"
        f" flight; idle CPU taken off; load {procs.load_average()})",
        "",
        "| task | weight | monolith | services | services / monolith | " + " | ".join(names) + " |",
        "|---" * (5 + len(names)) + "|",
    ]
    for t in TASKS:
        ratio = serv_us[t] / mono_us[t] if mono_us[t] else float("nan")
        lines.append(
            f"| {t} | {weights[t]} | {mono_us[t]:,.0f} | {serv_us[t]:,.0f} | {ratio:.2f} | "
            + " | ".join(f"{serv_cost[t].get(n, 0.0):,.0f}" for n in names)
            + " |"
        )
    m, s, shares = mix(weights, mono_us, serv_us)
    gateway = sum(weights[t] * serv_cost[t].get("gateway", 0.0) for t in TASKS) / sum(
        weights.values()
    )
    lines += [
        "",
        f"The shopper mix ({sum(weights.values())} tasks, weighted as in the locustfile):"
        f" monolith {m:,.0f} us, services {s:,.0f} us per shopper request,"
        f" services / monolith {s / m:.2f}. On one core, where throughput is 1 / CPU per"
        f" request, the services would serve about {m / s:.2f} of the monolith's rate.",
        f"The services' extra {s - m:,.0f} us per shopper request, by task (share of it): "
        + ", ".join(
            f"{t} {share:.0%}"
            for t, share in sorted(shares.items(), key=lambda kv: -kv[1])
            if abs(share) >= 0.005
        )
        + f". Of it, the gateway's own CPU is {gateway:,.0f} us ({gateway / (s - m):.0%}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
