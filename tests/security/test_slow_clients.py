"""Slow clients and slow upstreams cannot hang the gateway (real processes on 127.0.0.1).

Before: about 520 connections trickling their bodies held the gateway's 512 shared upstream
connections (no timeout while a body uploads, none while waiting for a pooled connection),
and then every route hung. Here the pool is 8 connections so that 12 slow clients are
enough to show it.

Now a client has ``header_timeout`` to send its request head and ``body_timeout`` its body,
the wait for a pooled connection is bounded (503 problem+json), every upstream has its own
pool, and one client address may hold only so many connections.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.security import live

pytestmark = pytest.mark.anyio

POOL = 8
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0
POOL_TIMEOUT = 1.0
PER_CLIENT = 4
SLOW_CLIENTS = 12
SLACK = 2.5
"""Time beyond a timeout for the server to act on it and the answer to arrive (2 cores)."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slow-clients")


@pytest.fixture(scope="module")
def gateway(folder: Path) -> Iterator[live.Live]:
    with (
        live.upstream(folder, "catalog") as catalog,
        live.upstream(folder, "cart") as cart,
        live.gateway(
            folder,
            {"/products": "catalog", "/cart": "cart"},
            {"catalog": catalog.port, "cart": cart.port},
            # The pool before: one for all upstreams (ignored once per-upstream pools exist).
            max_connections=str(POOL),
            max_connections_per_upstream=str(POOL),
            pool_timeout_seconds=str(POOL_TIMEOUT),
            header_timeout_seconds=str(HEADER_TIMEOUT),
            body_timeout_seconds=str(BODY_TIMEOUT),
            max_connections_per_client=str(PER_CLIENT),
            read_timeout_seconds="10",
        ) as gateway,
    ):
        yield gateway


@asynccontextmanager
async def connection(
    port: int, source: str
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        yield reader, writer
    finally:
        writer.close()


async def request(port: int, source: str, head: str, *, within: float) -> tuple[int, bytes]:
    """One request on a new connection from ``source``; its status and body."""
    async with connection(port, source) as (reader, writer):
        writer.write(head.encode())
        async with asyncio.timeout(within):
            data = await reader.read(-1)
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data.partition(b"\r\n\r\n")[2]


def get(path: str) -> str:
    return f"GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n"


async def trickle(port: int, source: str, head: bytes, every: float) -> tuple[float, bytes]:
    """Send ``head``, then one byte every ``every`` s until the server closes; how long the
    connection lasted (bounded by the test's own limit) and what the server answered."""
    started = time.monotonic()
    async with connection(port, source) as (reader, writer):
        writer.write(head)
        answer = b""
        limit = started + max(HEADER_TIMEOUT, BODY_TIMEOUT) + 3 * SLACK
        while time.monotonic() < limit:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), every)
            except TimeoutError:
                try:
                    writer.write(b"x")
                    await writer.drain()
                except ConnectionError:
                    break
                continue
            except ConnectionError:
                break
            if not chunk:
                break
            answer += chunk
        return time.monotonic() - started, answer


async def test_slow_uploads_are_cut_off_and_do_not_stop_other_requests(
    gateway: live.Live,
) -> None:
    upload = b"POST /products/upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 100000\r\n\r\nx"
    # Each slow client from an address of its own: the per-address cap is not what stops them.
    slow = [
        asyncio.create_task(trickle(gateway.port, f"127.0.1.{n + 1}", upload, 0.2))
        for n in range(SLOW_CLIENTS)
    ]
    try:
        await asyncio.sleep(0.5)  # let them take every pooled connection to catalog
        # A normal request meanwhile is answered: at worst a quick 503 while the pool is full.
        status, body = await request(
            gateway.port, "127.0.2.1", get("/products/1"), within=POOL_TIMEOUT + SLACK
        )
        assert status in (200, 503), (status, body)
        if status == 503:
            assert json.loads(body)["type"] == "/problems/service-unavailable", body
        # Requests to another upstream are untouched.
        status, body = await request(gateway.port, "127.0.2.2", get("/cart/1"), within=SLACK)
        assert status == 200, (status, body)
        lasted = await asyncio.gather(*slow)
    finally:
        for task in slow:
            task.cancel()
    # Every slow client was cut off once its body had taken the body timeout.
    for seconds, answer in lasted:
        assert BODY_TIMEOUT - 0.5 < seconds < BODY_TIMEOUT + SLACK, (seconds, answer[:200])
    # And catalog serves again.
    status, body = await request(gateway.port, "127.0.2.3", get("/products/1"), within=SLACK)
    assert status == 200, (status, body)
    assert "Traceback" not in gateway.log_file.read_text()


async def test_a_slow_head_is_cut_off(gateway: live.Live) -> None:
    slowloris = b"GET /products/1 HTTP/1.1\r\nHost: shop\r\nX-Drip: "
    seconds, answer = await trickle(gateway.port, "127.0.3.1", slowloris, 0.2)
    assert HEADER_TIMEOUT - 0.5 < seconds < HEADER_TIMEOUT + SLACK, (seconds, answer[:200])
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    # A connection that sends nothing at all is closed too.
    seconds, answer = await trickle(gateway.port, "127.0.3.2", b"", 10.0)
    assert seconds < HEADER_TIMEOUT + SLACK, (seconds, answer[:200])


async def test_a_slow_upstream_does_not_starve_another(gateway: live.Live) -> None:
    finished: list[str] = []

    async def call(name: str, source: str, path: str) -> int:
        status, _ = await request(gateway.port, source, get(path), within=10 + SLACK)
        finished.append(name)
        return status

    slow = [
        asyncio.create_task(call("slow", f"127.0.4.{n + 1}", "/products/slow?seconds=4"))
        for n in range(POOL + 2)
    ]
    await asyncio.sleep(0.5)  # catalog's pool is full of slow requests now
    assert await call("cart", "127.0.4.100", "/cart/1") == 200
    statuses = await asyncio.gather(*slow)
    # cart was answered while every slow request was still waiting on catalog.
    assert finished[0] == "cart", finished
    # The slow requests got their answers, or a 503 for those that found no free connection.
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= POOL, statuses


async def test_one_address_holds_only_so_many_connections(gateway: live.Live) -> None:
    async with asyncio.timeout(10):
        held = [
            await asyncio.open_connection("127.0.0.1", gateway.port, local_addr=("127.0.5.1", 0))
            for _ in range(PER_CLIENT)
        ]
        try:
            # One more from the same address: a 503 problem at once, then closed.
            async with connection(gateway.port, "127.0.5.1") as (reader, _):
                answer = await reader.read(-1)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            problem = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert problem["type"] == "/problems/too-many-connections", problem
            # Another address is served.
            status, body = await request(gateway.port, "127.0.5.2", get("/cart/1"), within=SLACK)
            assert status == 200, (status, body)
        finally:
            for _, writer in held:
                writer.close()
        # Once they are closed the address is served again (bounded polling).
        deadline = time.monotonic() + SLACK
        while True:
            try:
                status, body = await request(
                    gateway.port, "127.0.5.1", get("/cart/1"), within=SLACK
                )
            except ConnectionResetError:
                # Still refused: the server closed on the request it would not read.
                status, body = 0, b""
            if status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert status == 200, (status, body)
