"""The production path: the aiohttp client against upstreams listening on loopback ports.

Upstreams are uvicorn servers in threads of this process (started and stopped by the
fixture, nothing else); the gateway itself is driven in process.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.app import create_app
from launcher.processes import free_port
from shop.kernel.transport import SocketTransport
from tests.gateway.support import (
    Keys,
    echo_app,
    gateway_client,
    header,
    identity_app,
    settings,
)
from tests.gateway.support import write_topology as write

pytestmark = pytest.mark.anyio

ROUTES = {"/products": "catalog", "/auth": "identity", "/.well-known": "identity"}


class ThreadServer:
    """uvicorn serving one app on 127.0.0.1 from a thread; stopped by stop()."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ws="none",
            # A request the gateway gave up on may still be sleeping: don't wait for it.
            timeout_graceful_shutdown=0,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def upstreams(live_keys: Keys) -> Iterator[dict[str, Any]]:
    catalog, catalog_seen = echo_app("catalog")
    identity, identity_seen = identity_app(live_keys)
    servers = {"catalog": ThreadServer(catalog), "identity": ThreadServer(identity)}
    for server in servers.values():
        server.start()
    try:
        yield {
            "ports": {name: server.port for name, server in servers.items()},
            "seen": {"catalog": catalog_seen, "identity": identity_seen},
        }
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
async def client(tmp_path: Path, upstreams: dict[str, Any]) -> AsyncIterator[Any]:
    topology = write(tmp_path, ROUTES, upstreams["ports"])
    app = create_app(
        # Room for the 2 MiB bodies of the streaming test (the default cap is 1 MiB).
        settings(topology, read_timeout_seconds=0.5, max_body_bytes=4 << 20)
    )
    async with gateway_client(app) as http:
        clients = app.state.gateway.upstreams.values()
        assert all(isinstance(u._transport, SocketTransport) for u in clients)
        yield http


async def test_requests_go_over_pooled_connections(client: Any, upstreams: dict[str, Any]) -> None:
    seen = upstreams["seen"]["catalog"]
    headers = {"user-agent": "shopper/1.0", "accept-encoding": "identity"}
    responses = [await client.get(f"/products/{n}?q=a%20b", headers=headers) for n in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    records = seen.requests[-5:]
    assert [r["path"] for r in records] == [f"/products/{n}" for n in range(5)]
    assert {r["query"] for r in records} == {"q=a%20b"}
    # One kept-alive connection served them all, one after the other.
    assert len({r["client_port"] for r in records}) == 1
    # The caller's headers, not the client library's.
    assert header(records[-1], "user-agent") == ["shopper/1.0"]
    assert header(records[-1], "accept-encoding") == ["identity"]


async def test_bodies_stream_both_ways(client: Any, upstreams: dict[str, Any]) -> None:
    piece = b"0123456789abcdef" * 4096  # 64 KiB

    async def body() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield piece

    posted = await client.post("/products/upload", content=body())
    assert posted.status_code == 201
    assert posted.json()["body_size"] == len(piece) * 32
    assert posted.json()["body_sha256"] == hashlib.sha256(piece * 32).hexdigest()
    size = 2 * 1024 * 1024 + 3
    streamed = await client.get(f"/products/stream?size={size}&chunk=65536")
    assert streamed.status_code == 200
    assert len(streamed.content) == size
    # Content-Encoding is left alone: what the upstream sent is what the caller gets.
    gzip_ok = await client.get("/products/1", headers={"accept-encoding": "gzip"})
    assert gzip_ok.status_code == 200


async def test_tokens_are_checked_with_keys_fetched_over_http(
    client: Any, live_keys: Keys, upstreams: dict[str, Any]
) -> None:
    valid = await client.get(
        "/products/1", headers={"Authorization": f"Bearer {live_keys.token()}"}
    )
    invalid = await client.get("/products/1", headers={"Authorization": "Bearer x.y.z"})
    expired = await client.get(
        "/products/1", headers={"Authorization": f"Bearer {live_keys.token(exp=1)}"}
    )
    assert valid.status_code == 200
    assert invalid.status_code == 401
    assert expired.status_code == 401
    assert expired.headers["www-authenticate"] == "Bearer"


async def test_header_bytes_pass_unchanged(client: Any, upstreams: dict[str, Any]) -> None:
    utf8 = await client.get("/products/1", headers=[(b"idempotency-key", "ключ".encode())])
    latin1 = await client.get("/products/1", headers=[(b"x-latin1", b"caf\xe9")])
    assert (utf8.status_code, latin1.status_code) == (200, 200)
    # Bytes as the caller sent them, UTF-8 or not: the upstream sees exactly those.
    assert header(utf8.json(), "idempotency-key") == ["ключ".encode().decode("latin-1")]
    assert header(latin1.json(), "x-latin1") == ["caf\xe9"]


async def test_a_slow_upstream_times_out(client: Any) -> None:
    response = await client.get("/products/slow?seconds=1")
    assert response.status_code == 504
    assert response.json()["type"] == "/problems/upstream-timeout"


async def test_readyz_over_http(client: Any) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"upstreams": "ok"}


async def test_a_port_nobody_listens_on_is_unavailable(tmp_path: Path) -> None:
    topology = write(tmp_path, {"/products": "catalog"}, {"catalog": free_port()})
    app = create_app(settings(topology, breaker_threshold=2))
    async with gateway_client(app) as client:
        refused = [await client.get("/products/1") for _ in range(3)]
        ready = await client.get("/readyz")
    assert [r.status_code for r in refused] == [503] * 3
    assert refused[0].json()["detail"] == "The catalog service cannot be reached."
    assert "failing fast" in refused[2].json()["detail"]
    assert ready.status_code == 503
    assert ready.json()["detail"] == "Not ready: an upstream service is unavailable."


async def test_a_chunked_body_over_the_cap_is_cut_off_and_the_pool_stays_sound(
    tmp_path: Path, upstreams: dict[str, Any]
) -> None:
    # The gateway stops the upload mid-stream: the upstream connection that carried the
    # half-sent body must be dropped, not pooled, or the next request on it would be read
    # as the rest of that body.
    limit = 256 * 1024
    seen = upstreams["seen"]["catalog"]
    topology = write(tmp_path, ROUTES, upstreams["ports"])
    app = create_app(settings(topology, max_body_bytes=limit))

    async def trickle(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // 65536):
            yield b"y" * 65536

    async with gateway_client(app) as client:
        before = seen.count
        for _ in range(3):
            cut = await client.post("/products/upload", content=trickle(4 * limit))
            assert cut.status_code == 413, cut.text
            assert cut.json()["type"] == "/problems/payload-too-large"
            after = [await client.get(f"/products/{n}") for n in range(3)]
            assert [r.status_code for r in after] == [200] * 3
            fits = await client.post("/products/upload", content=trickle(limit))
            assert fits.status_code == 201, fits.text
            assert fits.json()["body_size"] == limit
    # The upstream completed only the whole requests, never a cut one.
    assert [r["body_size"] for r in seen.requests[before:]] == [0, 0, 0, limit] * 3
