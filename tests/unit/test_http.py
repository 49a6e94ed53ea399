"""The resilient upstream client: retries only where safe, budgets, the circuit breaker.

One client, two transports under it: an ``httpx2`` transport given by the caller
(``MockTransport`` here, ASGI in the contract suite), and by default
:class:`~shop.kernel.transport.SocketTransport`, tested over sockets against real servers on
127.0.0.1 started by the tests themselves (bounded waits, stopped in teardown).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from shop.kernel.http import (
    INTERNAL_TOKEN_HEADER,
    BadUpstreamResponse,
    CircuitBreaker,
    Replica,
    SentRequest,
    Timeouts,
    Upstream,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
    expect,
    request_target,
)
from shop.kernel.transport import SocketTransport, UnforwardableHeader

pytestmark = pytest.mark.anyio


class Script:
    """A transport that plays a list of outcomes (an exception class or a status) in turn."""

    def __init__(self, *outcomes: type[httpx2.TransportError] | int | httpx2.Response) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, httpx2.Response):
            return outcome
        if isinstance(outcome, int):
            return httpx2.Response(outcome, json={"ok": outcome < 400})
        raise outcome("scripted", request=request)


def upstream(script: Script, **kwargs: object) -> Upstream:
    options: dict[str, object] = {"backoff": 0.001, "retries": 2}
    options.update(kwargs)
    return Upstream(
        "stock",
        ["http://a", "http://b"],
        transport=httpx2.MockTransport(script),
        headers={INTERNAL_TOKEN_HEADER: "secret"},
        **options,  # type: ignore[arg-type]
    )


async def test_a_connect_error_is_retried_even_for_a_write_since_nothing_was_sent() -> None:
    script = Script(httpx2.ConnectError, 200)
    client = upstream(script)
    response = await client.request("POST", "/x", idempotent=False)
    assert response.status_code == 200
    assert len(script.requests) == 2
    # Round robin over the replicas, and the service token on every call.
    assert [r.url.host for r in script.requests] == ["a", "b"]
    assert all(r.headers[INTERNAL_TOKEN_HEADER] == "secret" for r in script.requests)
    # None of httpx2's default headers: no service reads them.
    assert set(script.requests[0].headers) == {"host", "content-length", "x-shop-internal-token"}
    await client.aclose()


async def test_a_read_timeout_is_not_retried_for_a_write() -> None:
    script = Script(httpx2.ReadTimeout, 200)
    client = upstream(script)
    with pytest.raises(UpstreamTimeout) as caught:
        await client.request("POST", "/x", idempotent=False)
    assert caught.value.status == 504
    assert len(script.requests) == 1
    await client.aclose()


async def test_an_idempotent_call_is_retried_on_timeouts_and_503() -> None:
    script = Script(httpx2.ReadTimeout, 503, 200)
    client = upstream(script)
    assert (await client.request("GET", "/x", idempotent=True)).status_code == 200
    assert len(script.requests) == 3
    await client.aclose()


async def test_retries_stop_at_the_limit_with_the_last_error() -> None:
    script = Script(503)
    client = upstream(script, retries=2)
    with pytest.raises(UpstreamUnavailable):
        await client.request("GET", "/x", idempotent=True)
    assert len(script.requests) == 3
    await client.aclose()


async def test_client_errors_pass_through_untouched() -> None:
    script = Script(409)
    client = upstream(script)
    response = await client.request("PUT", "/x", idempotent=True)
    assert response.status_code == 409
    assert len(script.requests) == 1
    with pytest.raises(BadUpstreamResponse):
        expect(response, 200)
    await client.aclose()


async def test_the_budget_bounds_the_whole_call() -> None:
    script = Script(503)
    client = upstream(
        script, retries=5, backoff=0.2, timeouts=Timeouts(connect=0.1, read=0.1, budget=0.3)
    )
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        await client.request("GET", "/x", idempotent=True)
    assert time.monotonic() - started < 0.5
    assert len(script.requests) < 6
    await client.aclose()


async def test_an_open_circuit_fails_fast_then_probes_and_closes() -> None:
    now = [100.0]
    breaker = CircuitBreaker(threshold=2, reset_after=5.0, clock=lambda: now[0])
    script = Script(httpx2.ConnectError)
    client = upstream(script, retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await client.request("GET", "/x", idempotent=True)
    assert breaker.state == "open"
    calls = len(script.requests)
    with pytest.raises(UpstreamUnavailable, match="failing fast"):
        await client.request("GET", "/x", idempotent=True)
    assert len(script.requests) == calls, "an open circuit sends nothing"

    now[0] += 5.0
    assert breaker.state == "half-open"
    script.outcomes = [200]
    assert (await client.request("GET", "/x", idempotent=True)).status_code == 200
    assert breaker.state == "closed"
    await client.aclose()


def test_a_failed_probe_opens_the_circuit_again() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, reset_after=1.0, clock=lambda: now[0])
    for _ in range(3):
        breaker.failure()
    now[0] = 1.0
    assert breaker.allow() is True
    assert breaker.allow() is False, "one probe at a time"
    breaker.failure()
    assert breaker.state == "open"


async def test_the_transport_path_answers_the_same_response_shape() -> None:
    client = upstream(Script(409))
    response = await client.request("PUT", "/x/1", idempotent=True, params={"ids": [2, 1]})
    assert (response.status_code, response.json()) == (409, {"ok": False})
    assert response.headers["CONTENT-TYPE"] == "application/json"
    assert response.text == response.content.decode() == '{"ok":false}'
    assert (response.request.method, response.request.url.path) == ("PUT", "/x/1")
    assert response.request.url.query_string == "ids=2&ids=1"
    with pytest.raises(BadUpstreamResponse, match="PUT /x/1 answered 409"):
        expect(response, 200)
    await client.aclose()


@pytest.mark.parametrize(
    "body", [b"<html>502 Bad Gateway</html>", b'{"cut": ', b"\xff\xfe\x00"], ids=str
)
async def test_a_body_that_is_not_json_is_a_bad_upstream_response_not_a_500(
    body: bytes,
) -> None:
    answer = httpx2.Response(200, content=body, headers={"Content-Type": "application/json"})
    client = upstream(Script(answer))
    response = await client.request("GET", "/x/1", idempotent=True)
    await client.aclose()
    with pytest.raises(BadUpstreamResponse, match="GET /x/1 answered 200 with a body") as caught:
        expect(response, 200)
    assert caught.value.status == 502
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(BadUpstreamResponse):
        response.json()


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/internal/x", {"ids": [1, 2]}),
        ("/a b/\u00fc", {"q": "a b&c", "on": True, "none": None}),
        ("/x", None),
        ("/x", {}),
        ("/p%2Fq", {"x": "\u00e9"}),
        ("/x?y=1", None),
        ("/x?y=1", {"z": 2}),
        ("/products/3e1f", {"ids": ["a/b", "c?d"]}),
        ("/x#fragment", None),
    ],
)
def test_a_calls_target_is_encoded_as_httpx2_encodes_it(
    path: str, params: dict[str, Any] | None
) -> None:
    replica = Replica("http://127.0.0.1:8001", CircuitBreaker())
    expected = httpx2.Request("GET", "http://127.0.0.1:8001" + path, params=params).url
    url = replica.target(request_target(path, params))
    # What goes on the wire: the target (a fragment never does) to the replica's address.
    assert (url.netloc, url.raw_path) == (expected.netloc, expected.raw_path)


# --- over sockets (SocketTransport), against real servers on 127.0.0.1 ----------------------

LIMIT = 10.0
"""No test of a real socket may take longer than this (seconds)."""


@dataclass
class Live:
    """A tiny aiohttp server on a free loopback port, recording every request it gets."""

    url: str = ""
    hits: list[str] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


async def _echo(live: Live, request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "query": [[key, value] for key, value in request.query.items()],
            "token": request.headers.get(INTERNAL_TOKEN_HEADER),
            "trace": request.headers.get("X-Trace"),
            "body": body.decode(),
            "content_type": request.headers.get("Content-Type"),
            "headers": [name.decode() for name, _ in request.raw_headers],
        },
        headers=CIMultiDict(
            [("X-Reply", "one"), ("X-Many", "a"), ("X-Many", "b"), ("Set-Cookie", "s=1; Path=/")]
        ),
    )


async def _gzipped(live: Live, request: web.Request) -> web.Response:
    # Sent compressed although nobody asked (no Accept-Encoding): decoded once, by httpx2.
    body = gzip.compress(json.dumps({"zipped": True}).encode())
    return web.Response(
        body=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )


async def _slow(live: Live, request: web.Request) -> web.Response:
    # Answers only when the test ends (or after 3 s): longer than any read timeout here.
    with anyio.move_on_after(3):
        await live.release.wait()
    return web.json_response({"late": True})


async def _status(live: Live, request: web.Request) -> web.Response:
    return web.json_response({"status": "x"}, status=int(request.match_info["code"]))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[], Awaitable[Live]]]:
    """Start as many live servers as a test asks for; every one is stopped afterwards."""
    runners: list[tuple[web.AppRunner, Live]] = []

    async def start() -> Live:
        live = Live()

        @web.middleware
        async def record(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            live.hits.append(f"{request.method} {request.path}")
            transport = request.transport
            live.peers.append(transport.get_extra_info("peername") if transport else None)
            return await handler(request)

        app = web.Application(middlewares=[record])
        routes = [("/echo", _echo), ("/slow", _slow), ("/status/{code}", _status)]
        for route, handler in [*routes, ("/gzipped", _gzipped)]:
            app.router.add_route("*", route, functools.partial(handler, live))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        assert host == "127.0.0.1"
        live.url = f"http://127.0.0.1:{port}"
        runners.append((runner, live))
        return live

    try:
        yield start
    finally:
        for runner, live in runners:
            live.release.set()
            with anyio.fail_after(LIMIT):
                await runner.cleanup()


@pytest.fixture
def refused() -> Iterator[str]:
    """A loopback port bound but never listening: every connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[bytes], Awaitable[Live]]]:
    """Raw servers that read a request, write ``reply`` (maybe nothing), then close."""
    servers: list[asyncio.Server] = []

    async def start(reply: bytes) -> Live:
        live = Live()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, _ = head.decode().split(" ", 2)
                live.hits.append(f"{method} {target}")
                for line in head.decode().lower().split("\r\n"):
                    if line.startswith("content-length:"):
                        await reader.readexactly(int(line.partition(":")[2]))
                if reply:
                    writer.write(reply)
                    await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        live.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return live

    try:
        yield start
    finally:
        for server in servers:
            server.close()
            with anyio.fail_after(LIMIT):
                await server.wait_closed()


@pytest.fixture
async def dropper(raw: Callable[[bytes], Awaitable[Live]]) -> Live:
    """A raw server that reads a request, then closes the connection unanswered."""
    return await raw(b"")


def socket_upstream(*urls: str, **kwargs: Any) -> Upstream:
    options: dict[str, Any] = {
        "backoff": 0.001,
        "retries": 2,
        "timeouts": Timeouts(connect=1.0, read=2.0, budget=5.0),
    }
    options.update(kwargs)
    return Upstream("stock", list(urls), headers={INTERNAL_TOKEN_HEADER: "secret"}, **options)


async def test_over_sockets_a_call_answers_body_headers_and_what_was_sent(
    serve: Callable[[], Awaitable[Live]],
) -> None:
    live = await serve()
    client = socket_upstream(live.url)
    try:
        with anyio.fail_after(LIMIT):
            response = await client.request(
                "GET",
                "/echo",
                idempotent=True,
                params={"ids": [3, 1], "q": "a b&c", "on": True},
                headers={"X-Trace": "t-1"},
            )
            posted = await client.request(
                "POST", "/echo", idempotent=False, json={"lines": [1, 2], "name": "thé"}
            )
            missing = await client.request("GET", "/status/404", idempotent=True)
            gzipped = await client.request("GET", "/gzipped", idempotent=True)
    finally:
        await client.aclose()
    assert response.status_code == 200
    body = expect(response, 200)
    # Repeated keys for a list, in order; the URL went out as httpx2 encoded it.
    assert body["query"] == [["ids", "3"], ["ids", "1"], ["q", "a b&c"], ["on", "true"]]
    assert response.request.url.raw_query_string == "ids=3&ids=1&q=a+b%26c&on=true"
    assert (body["token"], body["trace"]) == ("secret", "t-1")
    # Only the headers the client built, as it spelled them: neither httpx2's defaults nor
    # aiohttp's automatic ones (Accept, Accept-Encoding, User-Agent, Content-Type).
    assert body["headers"] == ["Host", INTERNAL_TOKEN_HEADER, "X-Trace"]
    assert response.headers["x-reply"] == response.headers["X-Reply"] == "one"
    # A header sent twice is there twice, in order.
    assert response.headers.getall("x-many") == ["a", "b"]
    assert response.json() == body
    assert response.text == response.content.decode()
    assert (response.request.method, response.request.url.path) == ("GET", "/echo")
    echoed = expect(posted, 200)
    assert echoed["method"] == "POST"
    assert echoed["content_type"] == "application/json"
    assert json.loads(echoed["body"]) == {"lines": [1, 2], "name": "thé"}
    # The first answer set a cookie: no jar keeps it, so the next call does not send it.
    assert echoed["headers"] == ["Host", INTERNAL_TOKEN_HEADER, "Content-Length", "Content-Type"]
    # A client error is the caller's to read, not an outage.
    assert missing.status_code == 404
    with pytest.raises(BadUpstreamResponse, match="GET /status/404 answered 404"):
        expect(missing, 200)
    assert expect(gzipped, 200) == {"zipped": True}
    assert live.hits == ["GET /echo", "POST /echo", "GET /status/404", "GET /gzipped"]
    # One kept-alive connection served every call.
    assert len(set(live.peers)) == 1


async def test_over_sockets_replicas_are_taken_in_turn(
    serve: Callable[[], Awaitable[Live]],
) -> None:
    first, second = await serve(), await serve()
    client = socket_upstream(first.url, second.url)
    try:
        with anyio.fail_after(LIMIT):
            for _ in range(4):
                assert (await client.request("GET", "/echo", idempotent=True)).status_code == 200
    finally:
        await client.aclose()
    assert (len(first.hits), len(second.hits)) == (2, 2)


async def test_a_refused_connection_is_retried_then_unavailable(
    refused: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = socket_upstream(refused, retries=2)
    caplog.set_level(logging.WARNING, logger="shop.http")
    try:
        with anyio.fail_after(LIMIT), pytest.raises(UpstreamUnavailable, match="cannot be reached"):
            # Even a write is retried: the request never left.
            await client.request("POST", "/echo", idempotent=False, json={})
    finally:
        await client.aclose()
    assert len([r for r in caplog.records if r.name == "shop.http"]) == 3


async def test_a_refused_replica_hands_even_a_write_to_the_next_one(
    refused: str, serve: Callable[[], Awaitable[Live]]
) -> None:
    live = await serve()
    client = socket_upstream(refused, live.url)
    try:
        with anyio.fail_after(LIMIT):
            response = await client.request("POST", "/echo", idempotent=False, json={"n": 1})
    finally:
        await client.aclose()
    assert response.status_code == 200
    assert live.hits == ["POST /echo"]


async def test_over_sockets_a_read_timeout_is_a_504_retried_only_when_idempotent(
    serve: Callable[[], Awaitable[Live]],
) -> None:
    live = await serve()
    client = socket_upstream(live.url, retries=1, timeouts=Timeouts(connect=1, read=0.2, budget=3))
    try:
        with anyio.fail_after(LIMIT):
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout) as caught:
                await client.request("POST", "/slow", idempotent=False)
            assert caught.value.status == 504
            assert time.monotonic() - started < 1.5
            assert live.hits == ["POST /slow"]
            with pytest.raises(UpstreamTimeout):
                await client.request("GET", "/slow", idempotent=True)
    finally:
        await client.aclose()
    assert live.hits == ["POST /slow", "GET /slow", "GET /slow"]


async def test_over_sockets_the_budget_bounds_the_whole_call(
    serve: Callable[[], Awaitable[Live]],
) -> None:
    live = await serve()
    client = socket_upstream(live.url, retries=5, timeouts=Timeouts(connect=1, read=5, budget=0.4))
    try:
        with anyio.fail_after(LIMIT):
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await client.request("GET", "/slow", idempotent=True)
            assert time.monotonic() - started < 1.5
    finally:
        await client.aclose()
    assert live.hits == ["GET /slow"]


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_a_dropped_connection_retries_only_an_idempotent_call(
    dropper: Live, method: str
) -> None:
    client = socket_upstream(dropper.url, retries=2)
    try:
        with anyio.fail_after(LIMIT):
            with pytest.raises(UpstreamUnavailable, match="failed to answer"):
                await client.request(method, "/x", idempotent=False, json={"n": 1})
            # Sent once: neither this class nor aiohttp sent it again.
            assert dropper.hits == [f"{method} /x"]
            with pytest.raises(UpstreamUnavailable, match="failed to answer"):
                await client.request(method, "/x", idempotent=True, json={"n": 1})
    finally:
        await client.aclose()
    assert dropper.hits == [f"{method} /x"] * 4


TRUNCATED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
"""An answer cut short: the head promises 100 bytes, the connection closes after one."""


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_a_connection_closed_mid_answer_retries_only_an_idempotent_call(
    raw: Callable[[bytes], Awaitable[Live]], method: str
) -> None:
    live = await raw(TRUNCATED)
    client = socket_upstream(live.url, retries=2)
    try:
        with anyio.fail_after(LIMIT):
            with pytest.raises(UpstreamUnavailable, match="failed to answer"):
                await client.request(method, "/x", idempotent=False, json={"n": 1})
            assert live.hits == [f"{method} /x"]
            with pytest.raises(UpstreamUnavailable, match="failed to answer"):
                await client.request(method, "/x", idempotent=True, json={"n": 1})
    finally:
        await client.aclose()
    assert live.hits == [f"{method} /x"] * 4


async def test_over_sockets_an_answer_keeps_its_headers_as_sent(
    raw: Callable[[bytes], Awaitable[Live]],
) -> None:
    live = await raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Many: a\r\n"
        b"Content-Type: application/json\r\nx-many: b\r\n\r\n7\r\n"
        b'{"a":1}\r\n0\r\n\r\n'
    )
    client = socket_upstream(live.url)
    try:
        with anyio.fail_after(LIMIT):
            response = await client.request("GET", "/x", idempotent=True)
    finally:
        await client.aclose()
    assert expect(response, 200) == {"a": 1}
    assert response.headers.getall("X-Many") == ["a", "b"]
    # Chunked, so no length: none is made up.
    assert "Content-Length" not in response.headers


@pytest.mark.parametrize(
    ("reply", "content"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b""),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", b"{}"),
    ],
)
async def test_over_sockets_an_empty_answer_is_an_answer(
    raw: Callable[[bytes], Awaitable[Live]], reply: bytes, content: bytes
) -> None:
    """A 204 (no body, no length) and an empty 200 come back as they were sent."""
    live = await raw(reply)
    client = socket_upstream(live.url)
    try:
        with anyio.fail_after(LIMIT):
            response = await client.request("POST", "/x", idempotent=False, json={"a": 1})
    finally:
        await client.aclose()
    assert response.content == content
    sent = reply.split(b"\r\n\r\n")[0].decode().lower()
    assert ("content-length" in response.headers) == ("content-length" in sent)


async def test_the_budget_bounds_an_answer_that_trickles_in() -> None:
    finished = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each byte comes well within the read timeout; the whole never does.
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not (reader.at_eof() or writer.is_closing()):
                writer.write(b" ")
                await asyncio.sleep(0.05)
        finally:
            writer.close()
            finished.set()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = socket_upstream(url, retries=3, timeouts=Timeouts(connect=1, read=1, budget=0.4))
    try:
        with anyio.fail_after(LIMIT):
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await client.request("GET", "/x", idempotent=True)
            assert time.monotonic() - started < 1.5
    finally:
        await client.aclose()
        server.close()
        with anyio.fail_after(LIMIT):
            # Given up on, the connection was closed: the server sees it and stops.
            await finished.wait()
            await server.wait_closed()


async def test_over_sockets_a_503_write_is_not_retried_and_the_breaker_opens(
    serve: Callable[[], Awaitable[Live]],
) -> None:
    live = await serve()
    breaker = CircuitBreaker(threshold=2, reset_after=60.0)
    client = socket_upstream(live.url, retries=2, breaker=breaker)
    try:
        with anyio.fail_after(LIMIT):
            with pytest.raises(UpstreamUnavailable, match="unavailable \\(503\\)"):
                await client.request("POST", "/status/503", idempotent=False)
            assert live.hits == ["POST /status/503"]
            assert breaker.state == "closed"
            with pytest.raises(UpstreamUnavailable):
                await client.request("GET", "/status/503", idempotent=True)
            assert breaker.state == "open"
            sent = len(live.hits)
            with pytest.raises(UpstreamUnavailable, match="failing fast"):
                await client.request("GET", "/echo", idempotent=True)
            assert len(live.hits) == sent, "an open circuit sends nothing"
    finally:
        await client.aclose()
    # The second call stopped retrying once the circuit opened after its first attempt.
    assert live.hits == ["POST /status/503", "GET /status/503"]


async def test_a_closed_upstream_refuses_to_send(refused: str) -> None:
    client = socket_upstream(refused)
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.request("GET", "/x", idempotent=True)


def test_an_upstream_is_made_outside_the_event_loop() -> None:
    # Made in create_app, before any loop runs: connections wait for the first call.
    Upstream("stock", ["http://127.0.0.1:1"])


# --- the transport alone: its failures as httpx2's -------------------------------------------


async def test_the_transport_raises_httpx2_errors(
    refused: str,
    serve: Callable[[], Awaitable[Live]],
    raw: Callable[[bytes], Awaitable[Live]],
) -> None:
    live, dropper, truncated = await serve(), await raw(b""), await raw(TRUNCATED)
    timeout = httpx2.Timeout(0.2, connect=1.0)
    async with httpx2.AsyncClient(transport=SocketTransport(), timeout=timeout) as client:
        with anyio.fail_after(LIMIT):
            with pytest.raises(httpx2.ConnectError):
                await client.get(refused)
            with pytest.raises(httpx2.ReadTimeout):
                await client.get(f"{live.url}/slow")
            with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
                await client.post(f"{dropper.url}/x", json={})
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.get(f"{truncated.url}/x")
            assert (await client.get(f"{live.url}/echo")).json()["method"] == "GET"


@pytest.mark.parametrize(
    ("method", "reply", "expected"),
    [
        # A body framed by the connection's end.
        (
            "GET",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
            (200, b"until the end"),
        ),
        # An informational answer first: the real one follows.
        (
            "GET",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            (201, b"ok"),
        ),
        # No body after a HEAD's head, whatever its Content-Length says.
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", (200, b"")),
        ("DELETE", b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"")),
    ],
)
async def test_the_transport_reads_every_framing_of_an_answer(
    raw: Callable[[bytes], Awaitable[Live]], method: str, reply: bytes, expected: tuple[int, bytes]
) -> None:
    live = await raw(reply)
    transport = SocketTransport()
    try:
        with anyio.fail_after(LIMIT):
            answer = await transport.handle_async_request(
                httpx2.Request(method, f"{live.url}/x", extensions={"timeout": {"read": 2.0}})
            )
            assert (answer.status_code, answer.content) == expected
    finally:
        await transport.aclose()


async def test_a_malformed_answer_is_a_protocol_error(
    raw: Callable[[bytes], Awaitable[Live]],
) -> None:
    live = await raw(b"HTTP/1.1 abc Nonsense\r\n\r\n")
    transport = SocketTransport()
    try:
        with anyio.fail_after(LIMIT), pytest.raises(httpx2.RemoteProtocolError, match="malformed"):
            await transport.handle_async_request(httpx2.Request("GET", f"{live.url}/x"))
    finally:
        await transport.aclose()


async def test_the_transport_keeps_connections_alive_and_closes_them(
    serve: Callable[[], Awaitable[Live]],
) -> None:
    live = await serve()
    transport = SocketTransport()
    async with httpx2.AsyncClient(transport=transport) as client:
        with anyio.fail_after(LIMIT):
            for _ in range(3):
                assert (await client.get(f"{live.url}/echo")).status_code == 200
        (pool,) = transport._pools.values()
        assert len(pool.open) == len(pool.idle) == 1  # one connection, reused
        (conn,) = pool.idle
    assert conn.closed
    assert not transport._pools
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx2.Request("GET", f"{live.url}/echo"))


async def test_the_transport_waits_for_room_under_its_cap(
    serve: Callable[[], Awaitable[Live]],
) -> None:
    """Two connections at most: the third call waits for one to come free, up to its pool
    timeout; then it is a ``PoolTimeout`` (never sent)."""
    live = await serve()
    transport = SocketTransport(limit=2)
    patient = {"timeout": {"connect": 1.0, "read": 5.0, "write": None, "pool": 5.0}}
    hurried = {"timeout": {"connect": 1.0, "read": 5.0, "write": None, "pool": 0.1}}
    try:
        with anyio.fail_after(LIMIT):
            slow = [
                asyncio.ensure_future(
                    transport.handle_async_request(
                        httpx2.Request("GET", f"{live.url}/slow", extensions=patient)
                    )
                )
                for _ in range(2)
            ]
            await asyncio.sleep(0.1)
            with pytest.raises(httpx2.PoolTimeout):
                await transport.handle_async_request(
                    httpx2.Request("GET", f"{live.url}/echo", extensions=hurried)
                )
            waiting = asyncio.ensure_future(
                transport.handle_async_request(
                    httpx2.Request("GET", f"{live.url}/echo", extensions=patient)
                )
            )
            await asyncio.sleep(0.1)
            assert not waiting.done()
            live.release.set()  # the slow answers come: their connections go to the waiter
            assert (await waiting).status_code == 200
            assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200]
        assert sum(len(p.open) for p in transport._pools.values()) <= 2
    finally:
        await transport.aclose()


def test_the_transport_runs_on_uvloop() -> None:
    """The servers run uvloop, whose transports are not ``asyncio.Transport`` subclasses:
    the same exchanges there (keep-alive reuse, a chunked upload, a chunked answer)."""
    import uvloop

    async def scenario() -> list[tuple[int, bytes]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                with contextlib.suppress(asyncio.IncompleteReadError):  # the client hung up
                    await exchanges(reader, writer)
            finally:
                writer.close()

        async def exchanges(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while head := await reader.readuntil(b"\r\n\r\n"):
                body = b""
                if b"chunked" in head:
                    while (size := int((await reader.readline()).strip(), 16)) > 0:
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readline()
                reply = b"%d:%b" % (len(body), head.split(b" ")[1])
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(reply), reply))
                await writer.drain()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = SocketTransport()

        class Upload(httpx2.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                yield b"abc"
                yield b"de"

        try:
            async with asyncio.timeout(LIMIT):
                answers = []
                for n in range(3):
                    request = httpx2.Request("GET", f"http://127.0.0.1:{port}/get/{n}")
                    response = await transport.handle_async_request(request)
                    answers.append((response.status_code, response.content))
                upload = httpx2.Request("POST", f"http://127.0.0.1:{port}/up", stream=Upload())
                response = await transport.handle_async_request(upload)
                answers.append((response.status_code, await response.aread()))
                (pool,) = transport._pools.values()
                assert len(pool.open) == 1  # every exchange on one connection
        finally:
            await transport.aclose()
            server.close()
            await server.wait_closed()
        return answers

    assert uvloop.run(scenario()) == [
        (200, b"0:/get/0"),
        (200, b"0:/get/1"),
        (200, b"0:/get/2"),
        (200, b"5:/up"),
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-split", b"a\r\nx-injected: 1"),
        (b"x-split", b"a\nx-injected: 1"),
        (b"x-split", b"a\rb"),
        (b"x-nul", b"a\0b"),
        (b"x-injected: 1\r\nx-name", b"a"),
    ],
)
async def test_the_transport_refuses_a_header_it_cannot_send(
    serve: Callable[[], Awaitable[Live]], name: bytes, value: bytes
) -> None:
    live = await serve()
    transport = SocketTransport()
    request = httpx2.Request("GET", f"{live.url}/echo")
    request.headers._list.append((name, name.lower(), value))
    try:
        with pytest.raises(UnforwardableHeader):
            await transport.handle_async_request(request)
        assert live.hits == []
        # The transport goes on with the next request as usual.
        answer = await transport.handle_async_request(httpx2.Request("GET", f"{live.url}/echo"))
        assert answer.status_code == 200
    finally:
        await transport.aclose()


# --- a body of the wrong shape, read by the bindings: 502, never a 500 ----------------------


def _answering(status: int, body: Any) -> Upstream:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, json=body)

    return Upstream("other", ["http://other"], transport=httpx2.MockTransport(answer), retries=0)


def test_expect_reads_a_body_and_turns_a_wrong_shape_into_a_502() -> None:
    response = UpstreamResponse(
        200,
        b'{"a": 1}',
        CIMultiDictProxy(CIMultiDict()),
        SentRequest("GET", URL("http://other/x")),
    )
    assert expect(response, 200, read=lambda body: body["a"] + 1) == 2
    with pytest.raises(BadUpstreamResponse, match="GET /x answered 200 with a body of the wrong"):
        expect(response, 200, read=lambda body: body["missing"])
    with pytest.raises(BadUpstreamResponse) as caught:
        expect(response, 200, read=lambda body: int("x"))
    assert caught.value.status == 502


WRONG_SHAPES: list[tuple[str, int, Any]] = [
    ("catalog entries", 200, [{"product_id": 1}]),
    ("catalog entries", 200, {"not": "a list"}),
    ("catalog entries", 200, [{"product_id": 1, "name": "x", "price": {"amount": "lots"}}]),
    ("stock levels", 200, ["a list"]),
    ("stock levels", 200, {"1": "many"}),
    ("cart lines", 200, [{"unknown": 1}]),
    ("reserve", 409, ["not a problem"]),
    ("reserve", 409, None),
    ("charge", 200, {"status": "who knows"}),
    ("charge status", 200, []),
    ("jwks", 200, [1, 2]),
    ("jwks", 200, {"keys": "none"}),
]


@pytest.mark.parametrize(("port", "status", "body"), WRONG_SHAPES, ids=str)
async def test_a_binding_answers_a_body_of_the_wrong_shape_with_a_502(
    port: str, status: int, body: Any
) -> None:
    import uuid

    from bindings import http as bindings
    from shop.kernel.types import Money

    upstream = _answering(status, body)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "catalog entries": lambda: bindings.CatalogEntries(upstream).entries([1]),
        "stock levels": lambda: bindings.InventoryStockLevels(upstream).available([1]),
        "cart lines": lambda: bindings.CartLines(upstream).lines(uuid.uuid4()),
        "reserve": lambda: bindings.InventoryReservations(upstream).reserve(uuid.uuid4(), []),
        "charge": lambda: bindings.PaymentsProcessor(upstream).charge(
            key="k",
            order_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            amount=Money(amount=100, currency="EUR"),
            card_number="4242424242424242",
        ),
        "charge status": lambda: bindings.PaymentsProcessor(upstream).status("k"),
        "jwks": lambda: bindings.remote_jwks(upstream)(),
    }
    with pytest.raises(BadUpstreamResponse) as caught:
        await calls[port]()
    assert caught.value.status == 502
    await upstream.aclose()
