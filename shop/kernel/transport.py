"""An ``httpx2`` transport that sends over a pooled ``aiohttp`` session.

:class:`shop.kernel.http.Upstream` hands every call, as an ``httpx2.Request``, to an
``httpx2`` transport, so the calls between processes and the calls between apps wired in
process (tests give it ``httpx2.ASGITransport``) share every line above the transport. Over
real sockets it gets this transport rather than httpx2's own connection pool, which costs
about twice the caller's CPU per call (``python -m bench.upstream`` measures both, and a
bare aiohttp session as the floor; figures in docs/benchmarks.md).

aiohttp's failures are raised as httpx2's exception classes, so a caller tells "never sent"
(``ConnectError``, ``ConnectTimeout``) from "sent, no answer in time" (``ReadTimeout``) from
"sent, then broken" (``RemoteProtocolError``, ``ReadError``) whichever transport it has.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import httpx2
from yarl import URL


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends each request exactly as httpx2 built it, and answers the body read whole.

    The session is made on the first request (it needs the running event loop) and closed
    by :meth:`aclose`. Per-request timeouts come
    from the request's ``timeout`` extension: ``connect`` bounds the socket connect, ``pool``
    plus ``connect`` the wait for a pooled connection and its connect, ``read`` each socket
    read. aiohttp has no write timeout, so ``write`` is not used.
    """

    def __init__(self, *, limit: int = 200, keepalive_timeout: float = 4.0) -> None:
        self.limit = limit
        self.keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        self._session = session(limit=self.limit, keepalive_timeout=self.keepalive_timeout)
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session
        if session is None:
            session = self._open()
        body = await request.aread()
        # The names as httpx2 spelled them (`multi_items` would lowercase them).
        encoding = request.headers.encoding
        headers = [
            (name.decode(encoding), value.decode(encoding)) for name, value in request.headers.raw
        ]
        try:
            async with session.request(
                request.method,
                # Already encoded by httpx2 (query included): sent as is, not re-quoted.
                URL(str(request.url), encoded=True),
                data=body or None,
                headers=headers,
                timeout=_client_timeout(request.extensions.get("timeout")),
                allow_redirects=False,
            ) as response:
                content = await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx2.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc
        except TimeoutError as exc:  # aiohttp's SocketTimeoutError is one too
            raise httpx2.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.ClientOSError as exc:  # reset or broken pipe once connected
            raise httpx2.ReadError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:  # disconnected, truncated body, bad status line
            raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
        if "Content-Encoding" in response.headers:
            # A stream, which the caller's `aread` decodes by its Content-Encoding.
            return httpx2.Response(
                response.status,
                headers=response.raw_headers,  # the raw pairs: a header sent twice stays twice
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


def session(*, limit: int = 200, keepalive_timeout: float = 4.0) -> aiohttp.ClientSession:
    """An ``aiohttp`` session tuned for calls between the shop's services (the transport's,
    and ``python -m bench.upstream``'s floor)."""
    new = aiohttp.ClientSession(
        # Idle connections are closed after 4 s, before uvicorn's 5 s on the service side:
        # the side that closes first must be the client, or a request can be sent on a
        # connection the service is closing.
        connector=aiohttp.TCPConnector(
            limit=limit, limit_per_host=0, keepalive_timeout=keepalive_timeout
        ),
        # No cookies, and no header httpx2 did not put on the request: aiohttp would add
        # Accept, Accept-Encoding, User-Agent, and a Content-Type to a POST without one.
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        # The body is handed over as it came: httpx2 decodes it by its Content-Encoding,
        # and would fail on a body aiohttp had already decoded.
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
