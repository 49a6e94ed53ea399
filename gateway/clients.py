"""The proxy's upstream HTTP client: one small Protocol, two implementations.

:class:`AiohttpClient` is the production default: measured on this machine it costs the
gateway far less CPU per request than httpx's pool (docs/gateway.md). :class:`HttpxClient`
runs the same proxy over any ``httpx2`` transport, so tests drive real upstream apps in
process through ``httpx2.ASGITransport`` with no sockets.

Both stream: a request body is sent as it arrives and a response body is handed over chunk by
chunk, and neither decodes ``Content-Encoding`` (bytes pass through unchanged). Both
translate their library's failures into the three :class:`UpstreamError` kinds the proxy
maps to statuses.
"""

from __future__ import annotations

import http.cookiejar
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import anyio
import httpx2
from yarl import URL

from shop.kernel.errors import BadRequest

logger = logging.getLogger("gateway.clients")

_TIMER_SLACK = 0.005
"""How early the event loop may fire a deadline, give or take (seconds)."""

Body = bytes | AsyncIterable[bytes] | None
"""A request body: none, all of it, or chunks as they arrive from the caller."""
Headers = Sequence[tuple[bytes, bytes]]
"""Raw header pairs, as ASGI has them: forwarded byte for byte where the client can."""


class UnforwardableHeader(BadRequest):
    """A header value the client cannot send unchanged, so it is refused, not altered."""


class UpstreamError(Exception):
    """The upstream did not produce a response; the subclass says how far the call got."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made: the request never left, another replica may take it."""


class UpstreamPoolTimeout(UpstreamError):
    """No pooled connection to the upstream came free in time: the request never left.

    The upstream's own pool is full (its answers are slow, or slow callers hold its
    connections); that says nothing about whether it is up, so no circuit counts it.
    """


class UpstreamReadTimeout(UpstreamError):
    """Connected, but the upstream did not answer (or stopped sending) in time."""


class UpstreamBroken(UpstreamError):
    """The connection failed after the request left, or the upstream broke the protocol."""


@dataclass(frozen=True)
class ClientTimeouts:
    """The timeouts of every upstream call, in seconds."""

    connect: float
    read: float
    """Longest wait for the response head, and between two chunks of its body."""
    pool: float = 1.0
    """Longest wait for a pooled connection to the upstream to come free."""


@dataclass(frozen=True)
class PoolLimits:
    """How many connections the client keeps to each upstream address."""

    per_upstream: int = 256
    """To one address (a replica of a service): each has a pool of its own, so a slow
    service fills its own pool and never another's."""


class UpstreamResponse(Protocol):
    """A response whose head has arrived; its body is read chunk by chunk."""

    status: int
    headers: list[tuple[bytes, bytes]]
    """Raw header pairs, names lower-cased, as ASGI sends them."""

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it arrives; ``b""`` once the body is complete."""
        ...

    @property
    def at_eof(self) -> bool:
        """Whether the body is complete (so the last chunk can be sent as the final one)."""
        ...

    async def read(self) -> bytes:
        """The rest of the body at once (for small documents: JWKS, OpenAPI, readiness)."""
        ...

    async def aclose(self) -> None:
        """Give the connection back to the pool (or drop it if the body was not read)."""
        ...


class ProxyClient(Protocol):
    """Sends one request to one upstream address."""

    async def send(
        self, service: str, method: str, url: str, headers: Headers, body: Body
    ) -> UpstreamResponse:
        """Send a request and return once the response head is in.

        ``url`` is absolute and already percent-encoded; it is sent as it is. ``headers``
        are sent as they are (no client defaults are added). Raises :class:`UpstreamError`,
        or :class:`UnforwardableHeader` before sending anything.
        """
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


# --- aiohttp ------------------------------------------------------------------------------


class _AiohttpResponse:
    __slots__ = ("_content", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content
        self.status = response.status
        self.headers = [(name.lower(), value) for name, value in response.raw_headers]

    async def read_chunk(self) -> bytes:
        try:
            return await self._content.readany()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamReadTimeout(str(exc) or "timed out reading the body") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamBroken(str(exc) or type(exc).__name__) from exc

    @property
    def at_eof(self) -> bool:
        return self._content.at_eof()

    async def read(self) -> bytes:
        chunks = []
        while chunk := await self.read_chunk():
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        # release() keeps the connection for reuse only once the body was read whole;
        # otherwise it closes it, so a half-read response never leaks into the next call.
        self._response.release()


class AiohttpClient:
    """The production client: one ``aiohttp.ClientSession``, a pool per upstream address."""

    def __init__(self, timeouts: ClientTimeouts, *, pools: PoolLimits | None = None) -> None:
        pools = pools or PoolLimits()
        # aiohttp's `connect` covers the wait for a pooled connection and the connect
        # itself (`sock_connect`), as shop.kernel.transport maps httpx2's pool timeout.
        self._connect_deadline = timeouts.pool + timeouts.connect
        self._pool_timeout = timeouts.pool
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._connect_deadline,
            sock_connect=timeouts.connect,
            sock_read=timeouts.read,
        )
        self._session = aiohttp.ClientSession(
            # Idle connections are closed after 4 s, before uvicorn's 5 s on the service side:
            # the side that closes first must be the client, or a request can be sent on a
            # connection the service is closing (a non-idempotent one is then lost).
            # No overall limit: a pool per address, so no upstream can starve another.
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=pools.per_upstream, keepalive_timeout=4.0
            ),
            # A proxy forwards bytes: no decompression, no cookies, no headers of its own.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            timeout=self._timeout,
        )

    async def send(
        self, service: str, method: str, url: str, headers: Headers, body: Body
    ) -> UpstreamResponse:
        try:
            # aiohttp takes str headers and writes them as UTF-8: decoding UTF-8 here gives
            # the caller's bytes back on the wire (latin-1 would double-encode them).
            text_headers = [(name.decode("latin-1"), value.decode()) for name, value in headers]
        except UnicodeDecodeError as exc:
            raise UnforwardableHeader(
                "A header value is not UTF-8 text; the gateway cannot forward it unchanged."
            ) from exc
        started = time.monotonic()
        try:
            response = await self._session.request(
                method,
                URL(url, encoded=True),
                headers=text_headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            # aiohttp raises the same error when its `connect` deadline (pool wait and
            # connect together) passes and when `sock_connect` does. Only the first can
            # take the whole deadline: a connect that failed alone took `sock_connect`
            # after getting its connection, and the deadline was not reached.
            if time.monotonic() - started >= self._connect_deadline - _TIMER_SLACK:
                raise UpstreamPoolTimeout(
                    f"no pooled connection came free within {self._pool_timeout:g} s"
                ) from exc
            raise UpstreamConnectError(f"connect timeout: {exc}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(str(exc)) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamReadTimeout(str(exc) or "timed out waiting for the response") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamBroken(str(exc) or type(exc).__name__) from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        await self._session.close()


# --- httpx2 -------------------------------------------------------------------------------


class _HttpxResponse:
    __slots__ = ("_chunks", "_pending", "_read_timeout", "_response", "headers", "status")

    def __init__(self, response: httpx2.Response, read_timeout: float) -> None:
        self._response = response
        self._read_timeout = read_timeout
        self.status = response.status_code
        self.headers = [(name.lower(), value) for name, value in response.headers.raw]
        # Raw bytes: Content-Encoding stays the upstream's business and the client's.
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self._pending: bytes | None = None

    async def _next(self) -> bytes:
        try:
            # Transports such as ASGITransport have no timeouts of their own.
            with anyio.fail_after(self._read_timeout):
                return await anext(self._chunks, b"")
        except TimeoutError as exc:
            raise UpstreamReadTimeout("timed out reading the body") from exc
        except httpx2.TimeoutException as exc:
            raise UpstreamReadTimeout(str(exc) or "timed out reading the body") from exc
        except httpx2.HTTPError as exc:
            raise UpstreamBroken(str(exc) or type(exc).__name__) from exc

    async def read_chunk(self) -> bytes:
        # One chunk of look-ahead answers at_eof, so the last chunk goes out as the final one.
        chunk = self._pending if self._pending is not None else await self._next()
        self._pending = await self._next() if chunk else b""
        return chunk

    @property
    def at_eof(self) -> bool:
        return self._pending == b""

    async def read(self) -> bytes:
        chunks = []
        while chunk := await self.read_chunk():
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._response.aclose()


def _no_cookies() -> http.cookiejar.CookieJar:
    # A proxy must not remember one caller's cookies for the next.
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class HttpxClient:
    """The proxy over ``httpx2``: a client (and so a pool) per service, over sockets by
    default or over the transport given for that service."""

    def __init__(
        self,
        timeouts: ClientTimeouts,
        *,
        transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
        pools: PoolLimits | None = None,
    ) -> None:
        pools = pools or PoolLimits()
        self._timeouts = timeouts
        self._timeout = httpx2.Timeout(
            timeouts.read, connect=timeouts.connect, pool=timeouts.pool
        ).as_dict()
        self._limits = httpx2.Limits(
            max_connections=pools.per_upstream, max_keepalive_connections=pools.per_upstream
        )
        self._transports = dict(transports or {})
        self._clients: dict[str, httpx2.AsyncClient] = {}

    def _client(self, service: str) -> httpx2.AsyncClient:
        client = self._clients.get(service)
        if client is None:
            client = self._clients[service] = httpx2.AsyncClient(
                transport=self._transports.get(service),
                limits=self._limits,
                cookies=_no_cookies(),
                follow_redirects=False,
            )
        return client

    async def send(
        self, service: str, method: str, url: str, headers: Headers, body: Body
    ) -> UpstreamResponse:
        client = self._client(service)
        # A bare Request, not client.build_request(): no client default headers are added.
        request = httpx2.Request(
            method, url, headers=headers, content=body, extensions={"timeout": self._timeout}
        )
        try:
            # A backstop for transports without timeouts of their own (ASGITransport);
            # httpx2's pool enforces the pool timeout itself.
            with anyio.fail_after(self._timeouts.connect + self._timeouts.read):
                response = await client.send(request, stream=True)
        except httpx2.PoolTimeout as exc:
            raise UpstreamPoolTimeout(
                f"no pooled connection came free within {self._timeouts.pool:g} s"
            ) from exc
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            raise UpstreamConnectError(str(exc) or type(exc).__name__) from exc
        except TimeoutError as exc:
            raise UpstreamReadTimeout("timed out waiting for the response") from exc
        except httpx2.TimeoutException as exc:
            raise UpstreamReadTimeout(str(exc) or type(exc).__name__) from exc
        except httpx2.HTTPError as exc:
            raise UpstreamBroken(str(exc) or type(exc).__name__) from exc
        except Exception as exc:
            # An in-process upstream (ASGITransport) raises its own errors here; over a
            # socket the same failure is a dropped connection.
            logger.warning("%s %s: upstream raised %r", method, url, exc)
            raise UpstreamBroken(f"the upstream failed: {type(exc).__name__}") from exc
        return _HttpxResponse(response, self._timeouts.read)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
