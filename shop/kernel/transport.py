"""An ``httpx2`` transport that speaks HTTP/1.1 on the event loop's own sockets.

:mod:`shop.kernel.http` hands every call over sockets, the gateway's and the services', to
this transport: pooled keep-alive connections to plain-``http`` addresses, each an
``asyncio.Protocol`` whose answers are parsed by ``httptools`` (the parser uvicorn serves
with). It does what a call between the shop's own processes needs and nothing else: no
TLS, no proxies, no cookies, no redirects, no decoding, no header of its own beyond the
body's framing. That is about half the CPU per call of a pooled ``aiohttp`` session, the
transport before it (``python -m bench.upstream``; docs/benchmarks.md).

A request goes exactly as httpx2 built it: its headers as they are (a value with CR, LF or
NUL in it is refused, never sent), its target as encoded. A body of bytes goes with its
``Content-Length``; a streamed body (the gateway's caller's) as it comes, with the caller's
``Content-Length``, else chunked. Per-request timeouts come from the ``timeout`` extension:
``pool`` bounds the wait for a connection to come free, ``connect`` the connect, ``read``
each wait for the answer's bytes, and a wait for the socket to take a streamed body's bytes.

Failures are httpx2's exception classes, so a caller tells "never sent" (``ConnectError``,
``ConnectTimeout``, ``PoolTimeout``) from "sent, no answer in time" (``ReadTimeout``) from
"sent, then broken" (``RemoteProtocolError``, ``ReadError``, ``WriteError``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import httptools
import httpx2

from shop.kernel.errors import BadRequest

STREAM = "shop.stream"
"""A request extension: ``True`` asks for the response body as it arrives (the gateway),
not read whole before the answer is handed over (calls between services)."""

KEEPALIVE_SECONDS = 4.0
"""Idle connections are closed after this long, before uvicorn's 5 s on the service side:
the side that closes first must be the client, or a request can be sent on a connection the
service is closing."""

_HIGH_WATER = 256 * 1024
"""Bytes of an answer's body held unread before the socket stops being read."""

_NO_BODY_STATUSES = frozenset({204, 304})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class UnforwardableHeader(BadRequest):
    """A header this transport cannot send unchanged (CR, LF or NUL in it): refused."""


def raw_headers(pairs: list[tuple[bytes, bytes]]) -> httpx2.Headers:
    """``httpx2.Headers`` of byte pairs as they are, built without httpx2's per-header type
    checks and normalisation (about 0.4 us a header, 4 to 8 us a proxied request each way).
    The pairs come from an HTTP parser (ASGI's, httptools') or from the shop's own code."""
    headers = httpx2.Headers()
    headers._list = [(name, name.lower(), value) for name, value in pairs]
    return headers


def _time_out(waiter: asyncio.Future[None], error: Callable[[], Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(error())


async def _bounded(
    waiter: asyncio.Future[None], within: float | None, error: Callable[[], Exception]
) -> None:
    """``await waiter``, failed with ``error()`` if it is not done ``within`` seconds.

    The deadline is a plain timer that fails the waiter: an ``asyncio.timeout`` (a task
    cancellation and its bookkeeping) on every wait for an answer's bytes cost a tenth of a
    proxied request.
    """
    if within is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(within, _time_out, waiter, error)
    try:
        await waiter
    finally:
        timer.cancel()


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.in_use = True
        """Carrying a request (bytes that come while it is idle mean it cannot be trusted)."""
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused = False
        self._reading_paused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.reusable = False
        self.error: httpx2.TransportError | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._framed = False
        self._until_close = False
        self.unsent = False
        """The request's body was not sent whole (the answer came first): not reusable."""

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.in_use or self.complete or self.error is not None:
            # Bytes nobody asked for (after a complete answer): the connection cannot be
            # trusted with another request.
            self._fail(httpx2.RemoteProtocolError("unexpected bytes after the answer"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx2.RemoteProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx2.RemoteProtocolError(f"malformed answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close: the answer ends here, or it was cut short

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and self._until_close and not self.complete:
            self.complete = True  # a body framed by the connection's end: this is it
        elif not self.complete and self.error is None:
            self.error = (
                httpx2.ReadError(f"connection lost: {exc}")
                if exc is not None
                else httpx2.RemoteProtocolError(
                    "the upstream closed the connection before a complete answer"
                )
            )
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self.pool.lost(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) in (14, 17) and name.lower() in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self.headers = []  # informational (100 Continue): the real answer follows
            self._framed = False
            return
        self.status = status
        self.head_done = True
        self._until_close = not self._framed and status not in _NO_BODY_STATUSES
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an informational answer
        self.complete = True
        self.reusable = self._parser.should_keep_alive()
        self._wake()

    # --- the caller's side ------------------------------------------------------------------

    def _fail(self, error: httpx2.TransportError) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, within: float | None) -> None:
        """Until the parser has more to tell (bytes, the head, the end, a failure)."""
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await _bounded(
                waiter, within, lambda: httpx2.ReadTimeout(f"no answer within {within:g} s")
            )
        finally:
            self._waiter = None

    def send(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise self.error or httpx2.WriteError("the connection is closed")
        self.transport.write(data)

    async def drain(self, within: float | None) -> None:
        """Until the socket takes more bytes (a streamed body is sent no faster)."""
        if not self._paused or self.closed:
            return
        self._writable = writable = asyncio.get_running_loop().create_future()
        try:
            await _bounded(
                writable,
                within,
                lambda: httpx2.WriteTimeout(f"the upstream took no bytes for {within:g} s"),
            )
        finally:
            self._writable = None
        if self.closed:
            raise self.error or httpx2.WriteError("the connection was lost while sending")

    async def head(self, within: float | None) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(within)

    async def chunk(self, within: float | None) -> bytes:
        """The next bytes of the body; ``b""`` once it is complete."""
        while not self._chunks:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait(within)
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._reading_paused and self._buffered <= _HIGH_WATER // 4 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def body(self, within: float | None) -> bytes:
        while not self.complete:
            if self.error is not None:
                raise self.error
            if self._reading_paused and self.transport:
                self._reading_paused = False
                self.transport.resume_reading()
            await self._wait(within)
        content = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return content

    def done(self) -> None:
        """The exchange is over: back to the pool if it may carry another, else closed."""
        if (
            self.complete
            and self.reusable
            and not self.unsent
            and not self.closed
            and self.error is None
        ):
            self._reset()
            self.in_use = False
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
            self.pool.lost(self)


class _Pool:
    """The connections to one address: idle ones for reuse, a cap on how many are open."""

    def __init__(self, host: str, port: int, owner: SocketTransport) -> None:
        self.host = host
        self.port = port
        self.owner = owner
        self.idle: deque[_Connection] = deque()
        self.open: set[_Connection] = set()
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    def has_room(self) -> bool:
        per_host = self.owner.limit_per_host
        return (not per_host or len(self.open) < per_host) and self.owner.has_room()

    async def acquire(self, timeouts: Mapping[str, Any]) -> _Connection:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()  # the most recently used: the least likely to be closing
            if not conn.closed and now - conn.idle_since < self.owner.keepalive_timeout:
                return conn
            conn.close()
        if not self.has_room() and self.owner.evict_idle(besides=self):
            pass  # an idle connection elsewhere made room under the transport's cap
        if not self.has_room():
            conn_or_room = await self._wait_for_room(timeouts.get("pool"))
            if conn_or_room is not None:
                return conn_or_room
        return await self._connect(timeouts.get("connect"))

    async def _wait_for_room(self, within: float | None) -> _Connection | None:
        """A connection handed back, or ``None`` once there is room for a new one."""
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            if within is None:
                return await waiter
            async with asyncio.timeout(within):
                return await waiter
        except BaseException as exc:
            # Timed out or cancelled, perhaps just as a connection or room was handed over:
            # that goes to the next in line, never lost.
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is not None:
                    self.put_back(handed)
                else:
                    self.owner.room_freed()
            if isinstance(exc, TimeoutError):
                raise httpx2.PoolTimeout(
                    f"no pooled connection came free within {within:g} s"
                ) from None
            raise
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    async def _connect(self, within: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self)
        self.open.add(conn)  # the slot is taken while connecting
        try:
            if within is None:
                await loop.create_connection(lambda: conn, self.host, self.port)
            else:
                async with asyncio.timeout(within):
                    await loop.create_connection(lambda: conn, self.host, self.port)
        except TimeoutError:
            self._forget(conn)
            raise httpx2.ConnectTimeout(
                f"no connection to {self.host}:{self.port} within {within:g} s"
            ) from None
        except OSError as exc:
            self._forget(conn)
            raise httpx2.ConnectError(f"{self.host}:{self.port}: {exc}") from exc
        except BaseException:
            self._forget(conn)
            raise
        return conn

    def _forget(self, conn: _Connection) -> None:
        conn.closed = True
        if conn in self.open:
            self.open.discard(conn)
            self.owner.room_freed()

    def put_back(self, conn: _Connection) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # straight to the next in line
                return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        # The oldest idle ones have outlived the keep-alive: closed, not left to the server.
        while (
            self.idle and conn.idle_since - self.idle[0].idle_since >= self.owner.keepalive_timeout
        ):
            self.idle.popleft().close()

    def lost(self, conn: _Connection) -> None:
        if conn in self.open:
            self.open.discard(conn)
            if conn in self.idle:
                self.idle.remove(conn)
            self.owner.room_freed()

    def wake_one(self) -> bool:
        """Give the room just freed to a waiter of this address, if there is one and room."""
        while self.waiters and self.has_room():
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def close(self) -> None:
        for conn in list(self.open):
            conn.close()


class SocketTransport(httpx2.AsyncBaseTransport):
    """Sends each request exactly as httpx2 built it, and answers the body read whole (or,
    with the :data:`STREAM` extension, as it arrives).

    ``limit`` caps the open connections of the transport (0: no cap), ``limit_per_host``
    those to one address (0: no cap); a request waits for one to come free, up to its
    ``pool`` timeout. Idle connections are closed after ``keepalive_timeout`` seconds.
    """

    def __init__(
        self,
        *,
        limit: int = 200,
        limit_per_host: int = 0,
        keepalive_timeout: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.limit = limit
        self.limit_per_host = limit_per_host
        self.keepalive_timeout = keepalive_timeout
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._closed = False

    def has_room(self) -> bool:
        return not self.limit or sum(len(p.open) for p in self._pools.values()) < self.limit

    def evict_idle(self, *, besides: _Pool) -> bool:
        """Close the oldest idle connection of another address; whether there was one."""
        if not self.limit:
            return False
        for pool in self._pools.values():
            if pool is not besides and pool.idle:
                pool.idle.popleft().close()
                return True
        return False

    def room_freed(self) -> None:
        for pool in self._pools.values():
            if pool.wake_one():
                return

    def _pool(self, url: httpx2.URL) -> _Pool:
        if url.scheme != "http":
            raise httpx2.UnsupportedProtocol(f"only http:// is spoken here, not {url.scheme}")
        key = (url.host, url.port or 80)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(key[0], key[1], self)
        return pool

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts = request.extensions.get("timeout") or {}
        read = timeouts.get("read")
        head, body, chunked = _head(request)
        conn = await self._pool(request.url).acquire(timeouts)
        conn.in_use = True
        try:
            if body is None:
                conn.send(head)
            elif isinstance(body, bytes):
                conn.send(head + body)
            else:
                conn.send(head)
                await _send_stream(conn, body, chunked=chunked, within=read)
            await conn.head(read)
            if request.method == "HEAD":
                # No body follows, whatever the head says; the parser cannot be told so,
                # and the connection goes with the answer.
                conn.close()
                return _response(request, conn.status, conn.headers, b"")
            if request.extensions.get(STREAM):
                return httpx2.Response(
                    conn.status,
                    headers=raw_headers(conn.headers),
                    stream=_Body(conn, read),
                    request=request,
                )
            content = await conn.body(read)
        except BaseException:
            conn.close()
            raise
        status, headers = conn.status, conn.headers
        conn.done()
        return _response(request, status, headers, content)

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _response(
    request: httpx2.Request, status: int, headers: list[tuple[bytes, bytes]], content: bytes
) -> httpx2.Response:
    """An answer read whole, as httpx2's."""
    if any(name.lower() == b"content-encoding" for name, _ in headers):
        # A stream, which the caller's `aread` decodes by its Content-Encoding.
        return httpx2.Response(
            status,
            headers=raw_headers(headers),
            stream=httpx2.ByteStream(content),
            request=request,
        )
    # The common case, a plain body: handed over as read, with no stream to go through
    # httpx2's decoders again, and no header made up.
    response = httpx2.Response(
        status, headers=raw_headers(headers), stream=httpx2.ByteStream(content), request=request
    )
    response._content = content  # read: `aread` answers it as it is
    return response


class _Body(httpx2.AsyncByteStream):
    """An answer's body as it arrives, undecoded; closing it frees the connection (kept for
    reuse only once the body was read whole)."""

    __slots__ = ("_conn", "_read")

    def __init__(self, conn: _Connection, read: float | None) -> None:
        self._conn: _Connection | None = conn
        self._read = read

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while chunk := await conn.chunk(self._read):
                yield chunk
        except BaseException:
            self._conn = None
            conn.close()
            raise
        self._conn = None
        conn.done()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if conn.complete and not conn._chunks:
                conn.done()
            else:
                conn.close()  # the body was not read whole: the connection cannot go again


def _head(
    request: httpx2.Request,
) -> tuple[bytes, bytes | httpx2.AsyncByteStream | None, bool]:
    """The request's head; its body: bytes, a stream, or none; whether it goes chunked."""
    stream = request.stream
    body: bytes | httpx2.AsyncByteStream | None
    if isinstance(stream, httpx2.ByteStream):
        body = request.read() or None
    else:
        assert isinstance(stream, httpx2.AsyncByteStream)
        body = stream
    lines = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            continue  # the body is framed here: by its length, else chunked
        if lowered == b"content-length":
            length = True
        lines += (name, b": ", value, b"\r\n")
    ends = len(lines) // 4 + 1  # the request line, a line per header, the empty line
    if isinstance(body, bytes) and not length:
        lines += (b"Content-Length: ", str(len(body)).encode(), b"\r\n")
        ends += 1
    chunked = body is not None and not isinstance(body, bytes) and not length
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
        ends += 1
    lines.append(b"\r\n")
    head = b"".join(lines)
    # Each line ends with the one CRLF put there: a CR, LF or NUL inside the target, a name
    # or a value would make more (a header smuggled in), so counting them tells.
    if head.count(b"\n") != ends or head.count(b"\r") != ends or b"\0" in head:
        raise UnforwardableHeader("A header holds a character that cannot be sent (CR, LF or NUL).")
    return head, body, chunked


async def _send_stream(
    conn: _Connection, body: httpx2.AsyncByteStream, *, chunked: bool, within: float | None
) -> None:
    """The body as it comes, no faster than the socket takes it. An answer that comes
    before it is all sent (a refusal) ends the sending: the answer is what counts, and the
    connection goes with it."""
    try:
        async for chunk in body:
            if conn.head_done:
                conn.unsent = True
                return
            if chunk:
                conn.send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain(within)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except httpx2.TransportError:
        if not conn.head_done:
            raise
        conn.unsent = True
