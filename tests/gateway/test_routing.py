"""Routing: prefixes from the topology file, the longest one winning, replicas in turn."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from tests.gateway.support import (
    BASE_PORT,
    ByPort,
    Switch,
    asgi,
    build,
    echo_app,
    gateway_client,
    write_topology,
)

pytestmark = pytest.mark.anyio


async def test_each_prefix_goes_to_its_service(tmp_path: Path) -> None:
    catalog, catalog_seen = echo_app("catalog")
    orders, orders_seen = echo_app("orders")
    topology = write_topology(
        tmp_path, {"/products": "catalog", "/categories": "catalog", "/orders": "orders"}
    )
    app = build(topology, {"catalog": asgi(catalog), "orders": asgi(orders)})
    async with gateway_client(app) as client:
        products = await client.get("/products/7")
        categories = await client.get("/categories")
        order = await client.get("/orders/abc/cancel")
    assert products.status_code == 200
    assert products.json()["service"] == "catalog"
    assert products.json()["path"] == "/products/7"
    assert categories.json()["service"] == "catalog"
    assert order.json()["service"] == "orders"
    assert order.json()["path"] == "/orders/abc/cancel"
    assert catalog_seen.count == 2
    assert orders_seen.count == 1


async def test_longest_prefix_wins_and_prefixes_match_whole_segments(tmp_path: Path) -> None:
    orders, _ = echo_app("orders")
    payments, _ = echo_app("payments")
    topology = write_topology(tmp_path, {"/orders": "orders", "/orders/refunds": "payments"})
    app = build(topology, {"orders": asgi(orders), "payments": asgi(payments)})
    async with gateway_client(app) as client:
        assert (await client.get("/orders")).json()["service"] == "orders"
        assert (await client.get("/orders/1")).json()["service"] == "orders"
        assert (await client.get("/orders/refunds")).json()["service"] == "payments"
        assert (await client.get("/orders/refunds/9")).json()["service"] == "payments"
        assert (await client.get("/orders/refundsx")).json()["service"] == "orders"
        # "/orders" claims /orders and /orders/..., not /ordersheet.
        unrouted = await client.get("/ordersheet")
    assert unrouted.status_code == 404
    assert unrouted.json()["type"] == "/problems/not-found"


@pytest.mark.parametrize("path", ["/", "/nowhere", "/products-old/1", "/favicon.ico"])
async def test_a_path_no_route_claims_is_a_not_found_problem(tmp_path: Path, path: str) -> None:
    catalog, seen = echo_app("catalog")
    app = build(write_topology(tmp_path, {"/products": "catalog"}), {"catalog": asgi(catalog)})
    async with gateway_client(app) as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "No resource at this path.",
    }
    assert seen.count == 0


@pytest.mark.parametrize(
    "path",
    [
        "/internal",
        "/internal/users/1",
        "//internal/users/1",
        "/Internal/users/1",
        "/products/../internal/users/1",
        "/products/%2e%2e/internal/users/1",
        "/products/%2E/1",
    ],
)
async def test_internal_paths_are_never_routed(tmp_path: Path, path: str) -> None:
    # Even a topology that (wrongly) routes /internal, or a catch-all, never reaches it.
    catalog, seen = echo_app("catalog")
    topology = write_topology(tmp_path, {"/internal": "catalog", "/products": "catalog"})
    app = build(topology, {"catalog": asgi(catalog)})
    async with gateway_client(app) as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["type"] == "/problems/not-found"
    assert seen.count == 0


async def test_replicas_take_turns(tmp_path: Path) -> None:
    first, first_seen = echo_app("catalog-0")
    second, second_seen = echo_app("catalog-1")
    topology = write_topology(tmp_path, {"/products": "catalog"}, {"catalog": BASE_PORT})
    by_port = ByPort({BASE_PORT: asgi(first), BASE_PORT + 1: asgi(second)})
    app = build(topology, {"catalog": by_port}, replicas="catalog=2")
    async with gateway_client(app) as client:
        served = [(await client.get(f"/products/{n}")).json()["service"] for n in range(6)]
    assert served == ["catalog-0", "catalog-1"] * 3
    assert first_seen.count == second_seen.count == 3


async def test_replicas_from_the_topology_file_and_shop_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps = [echo_app(f"catalog-{index}") for index in range(3)]
    topology = write_topology(tmp_path, {"/products": "catalog"}, {"catalog": BASE_PORT})
    monkeypatch.setenv("SHOP_REPLICAS", "catalog=3")
    transport = ByPort({BASE_PORT + index: asgi(app) for index, (app, _) in enumerate(apps)})
    app = build(topology, {"catalog": transport})
    async with gateway_client(app) as client:
        served = {(await client.get("/products/1")).json()["service"] for _ in range(3)}
    assert served == {"catalog-0", "catalog-1", "catalog-2"}


async def test_an_unreachable_replica_is_skipped(tmp_path: Path) -> None:
    healthy, seen = echo_app("catalog-0")
    dead = Switch(asgi(echo_app("catalog-1")[0]), down=True)
    topology = write_topology(tmp_path, {"/products": "catalog"}, {"catalog": BASE_PORT})
    transport = ByPort({BASE_PORT: asgi(healthy), BASE_PORT + 1: dead})
    app = build(topology, {"catalog": transport}, replicas="catalog=2", breaker_threshold=2)
    async with gateway_client(app) as client:
        statuses = [(await client.post("/products", json={"n": n})).status_code for n in range(6)]
    # Connection refused means the request never left: it is sent to the other replica,
    # and once the dead replica's circuit opens it is not even tried.
    assert statuses == [201] * 6
    assert seen.count == 6
    assert dead.attempts == 2


async def test_the_gateway_forwards_to_the_topology_addresses(tmp_path: Path) -> None:
    catalog, _ = echo_app("catalog")
    seen_urls: list[str] = []

    class Recording(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            seen_urls.append(str(request.url))
            return await asgi(catalog).handle_async_request(request)

    topology = write_topology(tmp_path, {"/products": "catalog"}, {"catalog": 8120})
    app = build(topology, {"catalog": Recording()}, upstream_host="10.1.2.3")
    async with gateway_client(app) as client:
        await client.get("/products/1?x=1")
    assert seen_urls == ["http://10.1.2.3:8120/products/1?x=1"]
