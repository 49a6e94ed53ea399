"""Calls between services, built for failure.

One :class:`Upstream` per service a deployable calls, made in its lifespan: a pooled client,
explicit connect and read timeouts inside a per-call budget, retries with jittered
exponential backoff only where a retry is safe, and a circuit breaker that fails fast while
the upstream is down and lets one probe through now and then to find it back.

Two ways to send, one behaviour. Over sockets (production: replicas on 127.0.0.1) it sends
with an ``aiohttp`` session, which costs far less CPU per call than httpx's pool (measured in
``docs/gateway.md`` and ``docs/benchmarks.md``). Given an ``httpx2`` transport (the tests
wire apps in process with ``httpx2.ASGITransport``) it sends with ``httpx2``. Either way a
call answers an :class:`UpstreamResponse`, with its body read whole.
"""

from __future__ import annotations

import itertools
import json as jsonlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import httpx2
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from shop.kernel.errors import ServiceUnavailable, ShopError

logger = logging.getLogger("shop.http")

INTERNAL_TOKEN_HEADER = "X-Shop-Internal-Token"  # noqa: S105 (a header name)
"""Proves a call comes from another service of the shop; the gateway never forwards it."""


class UpstreamUnavailable(ServiceUnavailable):
    """The upstream refused the connection, failed, or its circuit is open."""


class UpstreamTimeout(ShopError):
    status = 504
    slug = "upstream-timeout"
    title = "Upstream timeout"


class BadUpstreamResponse(ShopError):
    """The upstream answered something this caller cannot use (a bug, not an outage)."""

    status = 502
    slug = "bad-gateway"
    title = "Bad upstream response"


@dataclass(frozen=True, slots=True)
class SentRequest:
    """What was sent: the method and the URL (``url.path`` is the decoded path)."""

    method: str
    url: URL


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """An upstream's answer, body included (both ways of sending answer this)."""

    status_code: int
    content: bytes
    headers: CIMultiDictProxy[str]
    """Case-insensitive; a header sent twice is there twice (``getall``)."""
    request: SentRequest

    @property
    def text(self) -> str:
        """The body decoded with the charset of its ``Content-Type`` (UTF-8 by default)."""
        charset = _charset(self.headers.get("Content-Type"))
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``json.loads`` finds UTF-8, -16 or -32 by itself)."""
        return jsonlib.loads(self.content)


def _charset(content_type: str | None) -> str:
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value.strip("\"' "):
            return value.strip("\"' ")
    return "utf-8"


def expect(response: UpstreamResponse, *statuses: int) -> Any:
    """The decoded JSON body of a response with one of ``statuses``; else an error."""
    if response.status_code not in statuses:
        request = response.request
        raise BadUpstreamResponse(
            f"{request.method} {request.url.path} answered {response.status_code}:"
            f" {response.text[:200]}"
        )
    return response.json() if response.content else None


@dataclass(frozen=True)
class Timeouts:
    connect: float = 1.0
    read: float = 5.0
    budget: float = 8.0
    """The whole call, retries and backoff included."""


class CircuitBreaker:
    """Closed -> (``threshold`` failures in a row) -> open -> (``reset_after``) -> half-open.

    Half-open lets one probe through: its success closes the circuit, its failure opens it
    again. While open, calls fail at once instead of piling up on a dead upstream.
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_after: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._probing = False


_RETRYABLE_STATUS = {502, 503, 504}

# One attempt fails in one of three ways; the retry loop decides what each means.


class _NotSent(Exception):
    """No connection was made: the request never left, so any call may be retried."""


class _TimedOut(Exception):
    """Sent, but no (complete) answer in time."""


class _Broken(Exception):
    """Sent, then the connection failed or the upstream broke the protocol."""


def query_pairs(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Query parameters as httpx encodes them: a list or tuple becomes repeated keys
    (``ids=1&ids=2``), ``True``/``False`` become ``true``/``false``, ``None`` an empty value."""
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        for item in value if isinstance(value, list | tuple) else (value,):
            if item is True or item is False:
                pairs.append((key, "true" if item else "false"))
            else:
                pairs.append((key, "" if item is None else str(item)))
    return pairs


class Upstream:
    """A resilient client for one upstream service (round-robin over its replicas).

    ``transport`` (an ``httpx2`` transport, e.g. ``ASGITransport`` in tests) sends with
    ``httpx2``; without one, calls go over sockets with a pooled ``aiohttp`` session, made
    on the first call (it needs the running event loop) and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        name: str,
        base_urls: Sequence[str],
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        timeouts: Timeouts = Timeouts(),
        retries: int = 2,
        backoff: float = 0.05,
        breaker: CircuitBreaker | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not base_urls:
            raise ValueError(f"upstream {name} has no address")
        self.name = name
        self.base_urls = list(base_urls)
        self._next = itertools.cycle(range(len(self.base_urls)))
        self.timeouts = timeouts
        self.retries = retries
        self.backoff = backoff
        self.breaker = breaker or CircuitBreaker()
        self._headers = dict(headers or {})
        self._closed = False
        self._session: aiohttp.ClientSession | None = None
        self._client: httpx2.AsyncClient | None = None
        if transport is not None:
            self._client = httpx2.AsyncClient(
                transport=transport,
                headers=self._headers,
                timeout=httpx2.Timeout(timeouts.read, connect=timeouts.connect),
                limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
            )

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """Send one call; retried only if ``idempotent`` (or if it never left)."""
        if self._closed:
            raise RuntimeError(f"the upstream client of {self.name} is closed")
        send = self._send_httpx if self._client is not None else self._send_aiohttp
        deadline = time.monotonic() + self.timeouts.budget
        attempt = 0
        while True:
            if not self.breaker.allow():
                raise UpstreamUnavailable(
                    f"The {self.name} service is unavailable (failing fast while it recovers)."
                )
            remaining = deadline - time.monotonic()
            url = self.base_urls[next(self._next)] + path
            error: ShopError
            try:
                response = await send(method, url, json, params, headers, remaining)
            except _NotSent as exc:
                # The request never left: retrying cannot apply it twice.
                retryable = True
                error = UpstreamUnavailable(f"The {self.name} service cannot be reached.")
                logger.warning("%s %s: %r", method, url, exc.__cause__)
            except _TimedOut as exc:
                retryable = idempotent
                error = UpstreamTimeout(f"The {self.name} service did not answer in time.")
                logger.warning("%s %s: %r", method, url, exc.__cause__)
            except _Broken as exc:
                retryable = idempotent
                error = UpstreamUnavailable(f"The {self.name} service failed to answer.")
                logger.warning("%s %s: %r", method, url, exc.__cause__)
            else:
                if response.status_code not in _RETRYABLE_STATUS:
                    self.breaker.success()
                    return response
                retryable = idempotent
                error = UpstreamUnavailable(
                    f"The {self.name} service is unavailable ({response.status_code})."
                )
            self.breaker.failure()
            attempt += 1
            delay = random.uniform(0, self.backoff * 2**attempt)  # noqa: S311 (jitter)
            if not retryable or attempt > self.retries or time.monotonic() + delay >= deadline:
                raise error
            await anyio.sleep(delay)

    # -- over sockets: aiohttp ---------------------------------------------------------

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(
            # Idle connections are closed after 4 s, before uvicorn's 5 s on the service side:
            # the side that closes first must be the client, or a request can be sent on a
            # connection the service is closing.
            connector=aiohttp.TCPConnector(limit=200, limit_per_host=0, keepalive_timeout=4.0),
            headers=self._headers,
            # No cookies, no headers nobody reads; no Accept-Encoding, so no service
            # compresses (decoding stays on, in case one does anyway).
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            timeout=aiohttp.ClientTimeout(
                total=self.timeouts.budget,
                sock_connect=self.timeouts.connect,
                sock_read=self.timeouts.read,
            ),
        )
        # aiohttp resends GET, PUT and DELETE once by itself when a connection drops after
        # the request was written. Only this class decides what is retried (`idempotent`),
        # so that resend is turned off; an idempotent call is retried by the loop above.
        session._retry_connection = False
        return session

    async def _send_aiohttp(
        self,
        method: str,
        url: str,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        remaining: float,
    ) -> UpstreamResponse:
        session = self._session
        if session is None:
            session = self._session = self._aiohttp_session()
        timeout = aiohttp.ClientTimeout(
            total=max(0.01, remaining),
            sock_connect=max(0.01, min(self.timeouts.connect, remaining)),
            sock_read=max(0.01, min(self.timeouts.read, remaining)),
        )
        try:
            async with session.request(
                method,
                url,
                params=query_pairs(params) if params else None,
                json=json,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                content = await response.read()
                return UpstreamResponse(
                    response.status,
                    content,
                    response.headers,
                    SentRequest(response.method, response.url),
                )
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            raise _NotSent from exc
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError is one too
            raise _TimedOut from exc
        except aiohttp.ClientError as exc:
            raise _Broken from exc

    # -- through an httpx2 transport (in-process apps in tests) -------------------------

    async def _send_httpx(
        self,
        method: str,
        url: str,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        remaining: float,
    ) -> UpstreamResponse:
        assert self._client is not None
        timeout = httpx2.Timeout(
            max(0.01, min(self.timeouts.read, remaining)),
            connect=max(0.01, min(self.timeouts.connect, remaining)),
        )
        try:
            response = await self._client.request(
                method, url, json=json, params=params, headers=headers, timeout=timeout
            )
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            raise _NotSent from exc
        except httpx2.TimeoutException as exc:
            raise _TimedOut from exc
        except httpx2.TransportError as exc:
            raise _Broken from exc
        request = response.request
        return UpstreamResponse(
            response.status_code,
            response.content,
            CIMultiDictProxy(CIMultiDict(response.headers.multi_items())),
            SentRequest(request.method, URL(str(request.url), encoded=True)),
        )
