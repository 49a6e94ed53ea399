"""What passes through unchanged (bodies, statuses, headers, queries) and what does not."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.gateway.support import asgi, build, echo_app, gateway_client, header, write_topology

pytestmark = pytest.mark.anyio

ROUTES = {"/products": "catalog"}
UUID_HEX = re.compile(r"[0-9a-f]{32}")
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@pytest.fixture
def catalog() -> Any:
    return echo_app("catalog")


@pytest.fixture
def app(tmp_path: Path, catalog: Any) -> Any:
    return build(write_topology(tmp_path, ROUTES), {"catalog": asgi(catalog[0])})


async def test_method_body_status_and_headers_pass_through(app: Any, catalog: Any) -> None:
    _, seen = catalog
    async with gateway_client(app) as client:
        response = await client.post(
            "/products",
            content=b'{"name": "teapot"}',
            headers={"content-type": "application/json", "x-custom": "kept", "accept": "*/*"},
        )
    assert response.status_code == 201
    assert response.headers["x-upstream"] == "catalog"
    assert response.headers["content-type"] == "application/json"
    record = response.json()
    assert record == seen.last
    assert record["method"] == "POST"
    assert record["body_sha256"] == hashlib.sha256(b'{"name": "teapot"}').hexdigest()
    assert header(record, "x-custom") == ["kept"]
    assert header(record, "content-type") == ["application/json"]
    assert header(record, "content-length") == ["18"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET"])
async def test_every_method_reaches_the_upstream(app: Any, catalog: Any, method: str) -> None:
    async with gateway_client(app) as client:
        response = await client.request(method, "/products/3", content=b"x" * 3)
    assert response.status_code == 200
    assert catalog[1].last["method"] == method
    assert catalog[1].last["body_size"] == 3


async def test_head_has_the_head_and_no_body(app: Any) -> None:
    async with gateway_client(app) as client:
        response = await client.head("/products/1")
    assert response.status_code == 200
    assert response.content == b""


async def test_upstream_error_statuses_and_problem_bodies_pass_through(app: Any) -> None:
    async with gateway_client(app) as client:
        not_found = await client.get("/products/status/404")
        conflict = await client.post("/products/status/409")
        unavailable = await client.get("/products/status/503")
    assert not_found.status_code == 404
    assert conflict.status_code == 409
    # The service's own 503 is its answer, not the gateway's verdict on it.
    assert unavailable.status_code == 503
    assert unavailable.json()["service"] == "catalog"


async def test_query_strings_are_forwarded_byte_for_byte(app: Any, catalog: Any) -> None:
    query = "q=red%20teapot&sort=-price&tag=a&tag=b&empty=&x=%26%3D%2B"
    async with gateway_client(app) as client:
        response = await client.get(f"/products?{query}")
    assert response.status_code == 200
    assert catalog[1].last["query"] == query


async def test_encoded_paths_are_forwarded_as_sent(app: Any, catalog: Any) -> None:
    async with gateway_client(app) as client:
        await client.get("/products/a%20b%2Fc")
    assert catalog[1].last["raw_path"] == "/products/a%20b%2Fc"
    assert catalog[1].last["path"] == "/products/a b/c"


async def test_hop_by_hop_headers_are_dropped_both_ways(app: Any, catalog: Any) -> None:
    async with gateway_client(app) as client:
        response = await client.get(
            "/products/1",
            headers={
                "connection": "keep-alive, x-hop",
                "x-hop": "only for this connection",
                "keep-alive": "timeout=5",
                "te": "trailers",
                "proxy-authorization": "Basic c2VjcmV0",
                "upgrade": "websocket",
                "x-end-to-end": "kept",
            },
        )
    record = catalog[1].last
    names = {name for name, _ in record["headers"]}
    assert names.isdisjoint({"x-hop", "keep-alive", "te", "proxy-authorization", "upgrade"})
    assert header(record, "x-end-to-end") == ["kept"]
    # The upstream answered with connection/keep-alive headers: not the caller's business.
    assert "keep-alive" not in response.headers
    assert response.headers["x-upstream"] == "catalog"


async def test_header_bytes_pass_unchanged(app: Any, catalog: Any) -> None:
    async with gateway_client(app) as client:
        await client.get(
            "/products/1",
            headers=[(b"x-utf8", "ключ".encode()), (b"x-latin1", b"caf\xe9"), (b"x-tab", b"a\tb")],
        )
    record = catalog[1].last
    # The upstream reads header bytes as latin-1, as Starlette does.
    assert header(record, "x-utf8") == ["ключ".encode().decode("latin-1")]
    assert header(record, "x-latin1") == ["café"]
    assert header(record, "x-tab") == ["a\tb"]


async def test_the_internal_token_header_is_always_stripped(app: Any, catalog: Any) -> None:
    async with gateway_client(app) as client:
        await client.get("/products/1", headers={"X-Shop-Internal-Token": "forged"})
        await client.post(
            "/products",
            json={},
            headers=[("x-shop-internal-token", "a"), ("X-SHOP-INTERNAL-TOKEN", "b")],
        )
    for record in catalog[1].requests:
        assert header(record, "x-shop-internal-token") == []


async def test_forwarded_headers_describe_the_caller(app: Any, catalog: Any) -> None:
    async with gateway_client(app) as client:
        await client.get("/products/1", headers={"x-forwarded-for": "203.0.113.9"})
    record = catalog[1].last
    assert header(record, "x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert header(record, "x-forwarded-host") == ["gateway.test"]
    assert header(record, "x-forwarded-proto") == ["http"]


SPOOFED = {
    "X-Shop-Client-Address": "203.0.113.66",
    "X-Shop-Edge-Token": "the-edge-secret",  # even the right value, from a client
    "X-Forwarded-For": "203.0.113.67",
}


async def test_the_callers_address_goes_up_with_the_edge_token_and_is_never_the_callers_word(
    tmp_path: Path, catalog: Any
) -> None:
    topology = write_topology(tmp_path, ROUTES)
    app = build(topology, {"catalog": asgi(catalog[0])}, edge_token="the-edge-secret")
    async with gateway_client(app) as client:
        await client.get("/products/1", headers=SPOOFED)
    record = catalog[1].last
    assert header(record, "x-shop-client-address") == ["127.0.0.1"]
    assert header(record, "x-shop-edge-token") == ["the-edge-secret"]

    without = build(topology, {"catalog": asgi(catalog[0])})
    async with gateway_client(without) as client:
        await client.get("/products/1", headers=SPOOFED)
    record = catalog[1].last
    assert header(record, "x-shop-client-address") == []
    assert header(record, "x-shop-edge-token") == []


async def test_request_id_is_generated_forwarded_and_echoed(app: Any, catalog: Any) -> None:
    async with gateway_client(app) as client:
        generated = await client.get("/products/1")
        generated_seen = header(catalog[1].last, "x-request-id")
        given = await client.get("/products/1", headers={"X-Request-ID": "req-42.abc"})
        given_seen = header(catalog[1].last, "x-request-id")
        oversized = await client.get("/products/1", headers={"X-Request-ID": "x" * 500})
        oversized_seen = header(catalog[1].last, "x-request-id")
    assert UUID_HEX.fullmatch(generated.headers["x-request-id"])
    assert generated_seen == [generated.headers["x-request-id"]]
    assert given.headers["x-request-id"] == "req-42.abc"
    assert given_seen == ["req-42.abc"]
    # An unbounded id would land in every log line: it is replaced.
    assert UUID_HEX.fullmatch(oversized.headers["x-request-id"])
    assert oversized_seen == [oversized.headers["x-request-id"]]


async def test_request_id_is_echoed_on_the_gateways_own_answers(app: Any) -> None:
    async with gateway_client(app) as client:
        health = await client.get("/healthz", headers={"X-Request-ID": "mine"})
        missing = await client.get("/nowhere", headers={"X-Request-ID": "mine-too"})
        internal = await client.get("/internal/x")
    assert health.headers["x-request-id"] == "mine"
    assert missing.headers["x-request-id"] == "mine-too"
    assert UUID_HEX.fullmatch(internal.headers["x-request-id"])


async def test_traceparent_is_created_when_absent_or_invalid(app: Any, catalog: Any) -> None:
    async with gateway_client(app) as client:
        await client.get("/products/1")
        created = header(catalog[1].last, "traceparent")
        await client.get(
            "/products/1",
            headers={"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
        )
        replaced = header(catalog[1].last, "traceparent")
    assert len(created) == 1
    assert TRACEPARENT.fullmatch(created[0])
    assert len(replaced) == 1
    match = TRACEPARENT.fullmatch(replaced[0])
    assert match is not None
    assert match.group(1) != "0" * 32


async def test_a_valid_traceparent_continues_with_a_new_parent_span(app: Any, catalog: Any) -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with gateway_client(app) as client:
        await client.get("/products/1", headers={"traceparent": incoming, "tracestate": "k=v"})
    [forwarded] = header(catalog[1].last, "traceparent")
    match = TRACEPARENT.fullmatch(forwarded)
    assert match is not None
    assert match.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert match.group(2) not in ("00f067aa0ba902b7", "0" * 16)
    assert match.group(3) == "01"
    assert header(catalog[1].last, "tracestate") == ["k=v"]


async def test_a_large_request_body_streams_through(tmp_path: Path, catalog: Any) -> None:
    piece = bytes(range(256)) * 256  # 64 KiB
    pieces = 64  # 4 MiB in all
    # Over the default cap of 1 MiB (tests/gateway/test_body_limit.py): raised for this test.
    app = build(
        write_topology(tmp_path, ROUTES), {"catalog": asgi(catalog[0])}, max_body_bytes=8 << 20
    )
    digest = hashlib.sha256(piece * pieces).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(pieces):
            yield piece

    async with gateway_client(app) as client:
        response = await client.post("/products/upload", content=body())
    assert response.status_code == 201
    record = catalog[1].last
    assert record["body_size"] == len(piece) * pieces
    assert record["body_sha256"] == digest
    # Chunked in, chunked on: the gateway forwarded pieces, it did not gather the body.
    assert record["body_chunks"] > 1
    assert header(record, "transfer-encoding") == ["chunked"]


async def test_a_large_response_body_streams_through(app: Any) -> None:
    size, chunk = 3 * 1024 * 1024 + 17, 64 * 1024
    async with gateway_client(app) as client:
        response = await client.get(f"/products/stream?size={size}&chunk={chunk}")
    assert response.status_code == 200
    assert response.headers["x-total"] == str(size)
    assert len(response.content) == size
    expected = b"".join(
        bytes([start // chunk % 251]) * min(chunk, size - start) for start in range(0, size, chunk)
    )
    assert response.content == expected


class _Pieces(httpx2.AsyncByteStream):
    def __init__(self, pieces: int, size: int) -> None:
        self.pieces, self.size = pieces, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index in range(self.pieces):
            yield bytes([index]) * self.size


class _StreamingUpstream(httpx2.AsyncBaseTransport):
    """Answers with a body in many pieces (ASGITransport would hand it over joined)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, stream=_Pieces(16, 64 * 1024))


async def test_the_response_is_sent_on_piece_by_piece(tmp_path: Path) -> None:
    """Driven at the ASGI level, to see the messages the gateway sends, not a buffer."""
    app = build(write_topology(tmp_path, ROUTES), {"catalog": _StreamingUpstream()})
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/products/export",
        "raw_path": b"/products/export",
        "query_string": b"",
        "headers": [(b"host", b"gateway.test")],
        "client": ("127.0.0.1", 5000),
        "server": ("gateway.test", 80),
        "root_path": "",
    }
    async with gateway_client(app):
        await app(scope, receive, send)
    bodies = [m for m in messages if m["type"] == "http.response.body"]
    assert messages[0]["status"] == 200
    assert [m["body"] for m in bodies] == [bytes([index]) * 64 * 1024 for index in range(16)]
    # The last piece goes out as the final message: no extra empty one.
    assert [m["more_body"] for m in bodies] == [True] * 15 + [False]
