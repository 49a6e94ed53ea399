"""An ``httpx2`` transport that sends over a pooled ``aiohttp`` session.

:mod:`shop.kernel.http` hands every call, the gateway's and the services', as an
``httpx2.Request`` to an ``httpx2`` transport, so the calls between processes and the calls
between apps wired in process (tests give it ``httpx2.ASGITransport``) share every line
above the transport. Over real sockets it gets this transport rather than httpx2's own
connection pool, which costs about twice the caller's CPU per call and four times the
gateway's per proxied request (``python -m bench.upstream``, ``python -m bench.gateway``;
figures in docs/benchmarks.md and docs/gateway.md).

aiohttp's failures are raised as httpx2's exception classes, so a caller tells "never sent"
(``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``) from "sent, no answer in time"
(``ReadTimeout``) from "sent, then broken" (``RemoteProtocolError``, ``ReadError``) whichever
transport it has.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence

import aiohttp
import httpx2
from yarl import URL

from shop.kernel.errors import BadRequest

STREAM = "shop.stream"
"""A request extension: ``True`` asks for the response body as it arrives (the gateway),
not read whole before the answer is handed over (calls between services)."""

_TIMER_SLACK = 0.005
"""How early the event loop may fire a deadline, give or take (seconds)."""


def raw_headers(pairs: Sequence[tuple[bytes, bytes]]) -> httpx2.Headers:
    """``httpx2.Headers`` of byte pairs as they are, built without httpx2's per-header type
    checks and normalisation (about 0.4 us a header, 4 to 8 us a proxied request each way).
    The pairs come from an HTTP parser (ASGI's, aiohttp's) or from the shop's own code."""
    headers = httpx2.Headers()
    headers._list = [(name, name.lower(), value) for name, value in pairs]
    return headers


class UnforwardableHeader(BadRequest):
    """A header value this transport cannot send unchanged, so it is refused, not altered."""


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends each request exactly as httpx2 built it, and answers the body read whole
    (or, with the :data:`STREAM` extension, as it arrives).

    The session is made on the first request (it needs the running event loop) and closed
    by :meth:`aclose`. Per-request timeouts come from the request's ``timeout`` extension:
    ``connect`` bounds the socket connect, ``pool`` plus ``connect`` the wait for a pooled
    connection and its connect, ``read`` each socket read. aiohttp has no write timeout, so
    ``write`` is not used. ``limit`` caps the connections of the session (0: no cap),
    ``limit_per_host`` those to one address (0: no cap).
    """

    def __init__(
        self, *, limit: int = 200, limit_per_host: int = 0, keepalive_timeout: float = 4.0
    ) -> None:
        self.limit = limit
        self.limit_per_host = limit_per_host
        self.keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._timeouts: tuple[object, aiohttp.ClientTimeout] = (None, _client_timeout(None))

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        self._session = session(
            limit=self.limit,
            limit_per_host=self.limit_per_host,
            keepalive_timeout=self.keepalive_timeout,
        )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session
        if session is None:
            session = self._open()
        stream = request.stream
        # Bytes as they are; a streamed body (the gateway's caller's) as it comes.
        data = request.read() if isinstance(stream, httpx2.ByteStream) else stream
        try:
            # aiohttp writes header text as UTF-8: decoding UTF-8 gives the caller's bytes
            # back on the wire (latin-1 would double-encode them).
            headers = [(name.decode(), value.decode()) for name, value in request.headers.raw]
        except UnicodeDecodeError as exc:
            raise UnforwardableHeader(
                "A header value is not UTF-8 text; it cannot be forwarded unchanged."
            ) from exc
        if data is stream:
            # aiohttp frames a streamed body itself (chunked unless a length is given), and
            # refuses a Transfer-Encoding header of the caller's besides.
            headers = [h for h in headers if h[0].lower() != "transfer-encoding"]
        extensions = request.extensions
        timeouts = extensions.get("timeout")
        if timeouts is not self._timeouts[0]:
            # The same mapping on every call of an upstream: converted once while it lasts.
            self._timeouts = (timeouts, _client_timeout(timeouts))
        started = time.monotonic()
        try:
            response = await session.request(
                request.method,
                # Already encoded (query included): sent as is, not re-quoted.
                URL(str(request.url), encoded=True),
                data=data or None,
                headers=headers,
                timeout=self._timeouts[1],
                allow_redirects=False,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            # aiohttp raises the same error when its `connect` deadline (pool wait and
            # connect together) passes and when `sock_connect` does. Only the first can
            # take the whole deadline: a connect that failed alone took `sock_connect`
            # after getting its connection, and the deadline was not reached.
            pool = (timeouts or {}).get("pool")
            connect = (timeouts or {}).get("connect")
            if (
                pool is not None
                and connect is not None
                and time.monotonic() - started >= pool + connect - _TIMER_SLACK
            ):
                raise httpx2.PoolTimeout(
                    f"no pooled connection came free within {pool:g} s", request=request
                ) from exc
            raise httpx2.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translated(exc, request) from exc
        if extensions.get(STREAM):
            return httpx2.Response(
                response.status,
                # The raw pairs: a header sent twice stays twice.
                headers=raw_headers(response.raw_headers),
                stream=_Body(response, request),
                request=request,
            )
        try:
            content = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translated(exc, request) from exc
        finally:
            response.release()
        if "Content-Encoding" in response.headers:
            # A stream, which the caller's `aread` decodes by its Content-Encoding.
            return httpx2.Response(
                response.status,
                headers=response.raw_headers,
                stream=httpx2.ByteStream(content),
                request=request,
            )
        # The common case, a plain body: handed over as read, with no stream to go through
        # httpx2's decoders again (about 50 us of the 330 a call costs its caller).
        answer = httpx2.Response(
            response.status, headers=response.raw_headers, content=content, request=request
        )
        if "Content-Length" not in response.headers:
            # `content=` adds one to a non-empty body; a chunked answer had none, and a 204
            # none either: none is made up.
            answer.headers.pop("Content-Length", None)
        return answer

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _Body(httpx2.AsyncByteStream):
    """A response body as aiohttp receives it, undecoded; closing it frees the connection
    (kept for reuse only once the body was read whole)."""

    __slots__ = ("_request", "_response")

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            try:
                chunk = await content.readany()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise _translated(exc, self._request) from exc
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        self._response.release()


def _translated(exc: Exception, request: httpx2.Request) -> httpx2.TransportError:
    """aiohttp's failure once the connection is made, as httpx2's."""
    if isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError is one too
        return httpx2.ReadTimeout(str(exc) or "read timeout", request=request)
    if isinstance(exc, aiohttp.ClientOSError):  # reset or broken pipe once connected
        return httpx2.ReadError(str(exc), request=request)
    # Disconnected, truncated body, bad status line.
    return httpx2.RemoteProtocolError(str(exc) or type(exc).__name__, request=request)


def session(
    *, limit: int = 200, limit_per_host: int = 0, keepalive_timeout: float = 4.0
) -> aiohttp.ClientSession:
    """An ``aiohttp`` session tuned for calls between the shop's processes (the transport's,
    and ``python -m bench.upstream``'s floor)."""
    new = aiohttp.ClientSession(
        # Idle connections are closed after 4 s, before uvicorn's 5 s on the service side:
        # the side that closes first must be the client, or a request can be sent on a
        # connection the service is closing.
        connector=aiohttp.TCPConnector(
            limit=limit, limit_per_host=limit_per_host, keepalive_timeout=keepalive_timeout
        ),
        # No cookies, and no header httpx2 did not put on the request: aiohttp would add
        # Accept, Accept-Encoding, User-Agent, and a Content-Type to a POST without one.
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        # The body is handed over as it came: httpx2 decodes it by its Content-Encoding (a
        # proxy passes it on encoded), and would fail on a body aiohttp had already decoded.
        auto_decompress=False,
    )
    # aiohttp resends GET, PUT and DELETE once by itself when a connection drops after
    # the request was written. Only the caller decides what is retried (Upstream's
    # `idempotent`), so that resend is turned off.
    new._retry_connection = False
    return new


def _client_timeout(timeout: Mapping[str, float | None] | None) -> aiohttp.ClientTimeout:
    """httpx2's per-request timeouts as aiohttp's (``None`` or a missing key: no limit)."""
    if not timeout:
        return aiohttp.ClientTimeout()
    connect, pool = timeout.get("connect"), timeout.get("pool")
    return aiohttp.ClientTimeout(
        # aiohttp's `connect` covers the wait for a pooled connection and the connect.
        connect=None if connect is None or pool is None else pool + connect,
        sock_connect=connect,
        sock_read=timeout.get("read"),
    )
