"""The server under every deployable bounds what it reads of a request head (real processes).

uvicorn with httptools has no limit on a request's header block: a 64 KiB header was served
as any other, and a 16 MB one was read and kept. Now a head over 16 KiB is refused with 431
problem+json and the connection closed, and the server goes on serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security import live
from tests.system.conftest import LiveServer, database_url, live_monolith  # noqa: F401

LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.Live]:
    folder = tmp_path_factory.mktemp("limits-gateway")
    with live.gateway(folder, {"/products": "catalog"}, {"catalog": live.free_port()}) as server:
        yield server


@pytest.fixture(params=["gateway", "monolith"])
def server(
    request: pytest.FixtureRequest,
    gateway: live.Live,
    live_monolith: LiveServer,  # noqa: F811
) -> live.Live:
    if request.param == "gateway":
        return gateway
    port = int(live_monolith.base_url.rsplit(":", 1)[1])
    return live.Live("monolith", port, live_monolith.pid, live_monolith.log_file)


def head(*headers: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(headers) + b"\r\n"


def assert_431(response: bytes) -> None:
    assert live.status_of(response) == 431, response[:300]
    head_part, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head_part.lower(), head_part
    assert b"connection: close" in head_part.lower(), head_part
    problem = json.loads(body)
    assert problem["type"] == "/problems/request-header-fields-too-large", problem
    assert problem["status"] == 431


def assert_still_serving(server: live.Live) -> None:
    assert server.alive()
    response = live.raw_request(server.port, head(b"Connection: close\r\n"))
    assert live.status_of(response) == 200, response[:300]


def test_a_header_under_the_limit_is_served(server: live.Live) -> None:
    response = live.raw_request(server.port, head(b"X-Pad: " + b"a" * 8000 + b"\r\n"))
    assert live.status_of(response) == 200, response[:300]


def test_one_header_over_the_limit_is_a_431(server: live.Live) -> None:
    assert_431(live.raw_request(server.port, head(b"X-Big: " + b"a" * 64 * 1024 + b"\r\n")))
    assert_still_serving(server)


def test_many_small_headers_over_the_limit_are_a_431(server: live.Live) -> None:
    many = [b"X-N-%d: %s\r\n" % (n, b"v" * 16) for n in range(3000)]
    assert_431(live.raw_request(server.port, head(*many)))
    assert_still_serving(server)


def test_a_huge_header_is_refused_before_it_is_read(server: live.Live, tmp_path: Path) -> None:
    before = server.rss_kib()
    response = live.raw_request(server.port, head(b"X-Huge: " + b"a" * 16 * 1024 * 1024 + b"\r\n"))
    # 431, or a reset once the server closed on the rest: either way refused, never kept.
    assert live.status_of(response) in (431, None), response[:300]
    assert server.rss_kib() - before < 8 * 1024
    assert_still_serving(server)
    assert "Traceback" not in server.log_file.read_text()
