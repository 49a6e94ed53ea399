"""The gateway's cap on request bodies (``GATEWAY_MAX_BODY_BYTES``), on its proxy path.

The upstream here has no cap of its own, so whatever it receives is what the gateway let
through. Over TCP with the aiohttp client: tests/gateway/test_live.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.support import Switch, asgi, build, echo_app, gateway_client, write_topology

pytestmark = pytest.mark.anyio

ROUTES = {"/products": "catalog"}
LIMIT = 1000


async def pieces(count: int, size: int = 100) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


@pytest.fixture
def catalog() -> Any:
    return echo_app("catalog")


@pytest.fixture
def switch(catalog: Any) -> Switch:
    return Switch(asgi(catalog[0]))


@pytest.fixture
def app(tmp_path: Path, switch: Switch) -> Any:
    return build(
        write_topology(tmp_path, ROUTES),
        {"catalog": switch},
        max_body_bytes=LIMIT,
        breaker_threshold=2,
    )


def assert_too_large(response: Any) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/payload-too-large"
    assert f"{LIMIT} bytes" in response.json()["detail"]


async def test_a_declared_length_over_the_cap_never_reaches_an_upstream(
    app: Any, switch: Switch, catalog: Any
) -> None:
    async with gateway_client(app) as client:
        response = await client.post(
            "/products", content=b"x" * (LIMIT + 1), headers={"x-request-id": "big-1"}
        )
    assert_too_large(response)
    assert response.headers["x-request-id"] == "big-1"
    assert response.headers["connection"] == "close"
    assert switch.attempts == 0
    assert catalog[1].count == 0


async def test_a_chunked_body_is_cut_off_mid_stream(app: Any, switch: Switch, catalog: Any) -> None:
    async with gateway_client(app) as client:
        # More cut-offs than the breaker's threshold: none of them counts as a failure.
        for _ in range(3):
            assert_too_large(await client.post("/products", content=pieces(50)))
        after = await client.post("/products", content=pieces(10))
    # The upstream never completed a request with a cut body.
    assert all(record["body_size"] <= LIMIT for record in catalog[1].requests[:-1])
    assert after.status_code == 201, after.text
    assert after.json()["body_size"] == LIMIT
    assert catalog[1].last["body_size"] == LIMIT


async def test_a_first_chunk_over_the_cap_is_refused_before_the_upstream(
    app: Any, switch: Switch
) -> None:
    async def one_big_piece() -> AsyncIterator[bytes]:
        yield b"x" * (LIMIT + 1)

    async with gateway_client(app) as client:
        response = await client.post("/products", content=one_big_piece())
    assert_too_large(response)
    assert switch.attempts == 0
