"""Failing upstreams: 503 and 504 problems, and circuits that fail fast, then recover."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.gateway.support import Switch, asgi, build, echo_app, gateway_client, write_topology

pytestmark = pytest.mark.anyio

ROUTES = {"/products": "catalog", "/orders": "orders"}


def _problem(response: httpx2.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["detail"]


async def test_an_upstream_that_raises_is_a_service_unavailable_problem(tmp_path: Path) -> None:
    catalog, seen = echo_app("catalog")
    app = build(write_topology(tmp_path, ROUTES), {"catalog": asgi(catalog)})
    async with gateway_client(app) as client:
        response = await client.get("/products/boom")
    _problem(response, 503, "service-unavailable")
    assert "catalog" in response.json()["detail"]
    assert seen.count == 1


async def test_an_unreachable_upstream_is_a_service_unavailable_problem(tmp_path: Path) -> None:
    switch = Switch(asgi(echo_app("catalog")[0]), down=True)
    app = build(write_topology(tmp_path, ROUTES), {"catalog": switch})
    async with gateway_client(app) as client:
        response = await client.post("/products", json={"name": "teapot"})
    _problem(response, 503, "service-unavailable")
    assert "x-request-id" in response.headers


async def test_a_slow_upstream_is_a_timeout_problem(tmp_path: Path) -> None:
    catalog, _ = echo_app("catalog")
    app = build(
        write_topology(tmp_path, ROUTES),
        {"catalog": asgi(catalog)},
        read_timeout_seconds=0.2,
        connect_timeout_seconds=0.05,
    )
    async with gateway_client(app) as client:
        started = time.monotonic()
        response = await client.get("/products/slow?seconds=3")
        elapsed = time.monotonic() - started
    _problem(response, 504, "upstream-timeout")
    assert elapsed < 2.0


async def test_the_circuit_opens_fails_fast_and_recovers(tmp_path: Path) -> None:
    catalog, seen = echo_app("catalog")
    orders, orders_seen = echo_app("orders")
    switch = Switch(asgi(catalog), down=True)
    app = build(
        write_topology(tmp_path, ROUTES),
        {"catalog": switch, "orders": asgi(orders)},
        breaker_threshold=3,
        breaker_reset_seconds=0.3,
    )
    async with gateway_client(app) as client:
        failures = [await client.get("/products/1") for _ in range(3)]
        assert switch.attempts == 3
        fast = [await client.get("/products/1") for _ in range(5)]
        # Open: nothing reaches the upstream while it recovers.
        assert switch.attempts == 3
        # One upstream's circuit is its own: the others keep serving.
        assert (await client.get("/orders/1")).status_code == 200

        switch.down = False
        await anyio.sleep(0.35)
        probe = await client.get("/products/1")
        after = [await client.get("/products/1") for _ in range(3)]
    for response in failures + fast:
        _problem(response, 503, "service-unavailable")
    assert all("failing fast" in r.json()["detail"] for r in fast)
    assert probe.status_code == 200
    assert [r.status_code for r in after] == [200] * 3
    assert seen.count == 4
    assert orders_seen.count == 1


async def test_a_failed_probe_opens_the_circuit_again(tmp_path: Path) -> None:
    switch = Switch(asgi(echo_app("catalog")[0]), down=True)
    app = build(
        write_topology(tmp_path, ROUTES),
        {"catalog": switch},
        breaker_threshold=2,
        breaker_reset_seconds=0.2,
    )
    async with gateway_client(app) as client:
        for _ in range(2):
            await client.get("/products/1")
        await anyio.sleep(0.25)
        probe = await client.get("/products/1")
        attempts_after_probe = switch.attempts
        fast = await client.get("/products/1")
    _problem(probe, 503, "service-unavailable")
    _problem(fast, 503, "service-unavailable")
    assert attempts_after_probe == 3
    assert switch.attempts == 3


async def test_timeouts_count_toward_the_circuit(tmp_path: Path) -> None:
    catalog, seen = echo_app("catalog")
    app = build(
        write_topology(tmp_path, ROUTES),
        {"catalog": asgi(catalog)},
        read_timeout_seconds=0.05,
        connect_timeout_seconds=0.05,
        breaker_threshold=2,
        breaker_reset_seconds=5.0,
    )
    async with gateway_client(app) as client:
        timeouts = [await client.get("/products/slow?seconds=1") for _ in range(2)]
        fast = await client.get("/products/1")
    for response in timeouts:
        _problem(response, 504, "upstream-timeout")
    _problem(fast, 503, "service-unavailable")
    assert seen.count == 2


async def test_upstream_error_answers_do_not_open_the_circuit(tmp_path: Path) -> None:
    catalog, _ = echo_app("catalog")
    app = build(write_topology(tmp_path, ROUTES), {"catalog": asgi(catalog)}, breaker_threshold=2)
    async with gateway_client(app) as client:
        # A 504 payment-timeout or a 503 from a service is an answer, passed on as it is.
        answers = [await client.get("/products/status/504") for _ in range(4)]
        after = await client.get("/products/1")
    assert [r.status_code for r in answers] == [504] * 4
    assert all(r.json()["service"] == "catalog" for r in answers)
    assert after.status_code == 200


async def test_a_caller_leaving_mid_upload_is_not_held_against_the_upstream(
    tmp_path: Path,
) -> None:
    catalog, _ = echo_app("catalog")
    app = build(write_topology(tmp_path, ROUTES), {"catalog": asgi(catalog)}, breaker_threshold=1)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"part one", "more_body": True},
        {"type": "http.disconnect"},
    ]
    incoming = iter(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/products",
        "raw_path": b"/products",
        "query_string": b"",
        "headers": [(b"host", b"gateway.test"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("gateway.test", 80),
        "root_path": "",
    }
    async with gateway_client(app) as client:
        await app(scope, receive, send)
        after = await client.get("/products/1")
    # Nobody is left to answer; and one departure did not open a threshold-1 circuit.
    assert sent == []
    assert after.status_code == 200
