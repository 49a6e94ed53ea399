"""Calls between services, built for failure.

One :class:`Upstream` per service a deployable calls, made in its lifespan: a pooled client,
explicit connect and read timeouts inside a per-call budget, retries with jittered
exponential backoff only where a retry is safe, and a circuit breaker that fails fast while
the upstream is down and lets one probe through now and then to find it back.

One way to send: an ``httpx2.Request`` handed to an ``httpx2`` transport, whichever it is.
Over sockets (production: replicas on 127.0.0.1) the transport is
:class:`shop.kernel.transport.AiohttpTransport`, a pooled ``aiohttp`` session, which costs
far less CPU per call than httpx2's own pool (``python -m bench.upstream``); the tests give
``httpx2.ASGITransport`` to wire apps in process. Everything above the transport (headers,
timeouts, retries, the breaker, the answer) is the same code on both. A call answers an
:class:`UpstreamResponse`, with its body read whole.
"""

from __future__ import annotations

import asyncio
import itertools
import json as jsonlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from shop.kernel.errors import ServiceUnavailable, ShopError
from shop.kernel.transport import AiohttpTransport

logger = logging.getLogger("shop.http")

INTERNAL_TOKEN_HEADER = "X-Shop-Internal-Token"  # noqa: S105 (a header name)
"""Proves a call comes from another service of the shop; the gateway never forwards it."""
EDGE_TOKEN_HEADER = "X-Shop-Edge-Token"  # noqa: S105 (a header name)
"""Proves a request comes through the gateway (``SHOP_EDGE_TOKEN``); never a client's."""
CLIENT_ADDRESS_HEADER = "X-Shop-Client-Address"
"""The address the gateway's caller connected from; trusted only with the edge token."""


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
    """An upstream's answer, body included (whichever transport carried it)."""

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
        """The body parsed as JSON (``json.loads`` finds UTF-8, -16 or -32 by itself).

        A body that is not JSON is the upstream's fault, not this caller's: it raises
        :class:`BadUpstreamResponse` (502), never a bare ``ValueError`` (a 500).
        """
        try:
            return jsonlib.loads(self.content)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            request = self.request
            raise BadUpstreamResponse(
                f"{request.method} {request.url.path} answered {self.status_code} with a body"
                f" that is not JSON: {self.text[:200]!r}"
            ) from exc


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


class Upstream:
    """A resilient client for one upstream service (round-robin over its replicas).

    Sends ``httpx2`` requests through ``transport``: by default (``None``) an
    :class:`~shop.kernel.transport.AiohttpTransport` to the replicas' sockets, or the
    ``httpx2`` transport given (``ASGITransport`` in tests). :meth:`aclose` closes it.
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
        self._closed = False
        self._transport = AiohttpTransport() if transport is None else transport
        self._headers = dict(headers or {})

    async def aclose(self) -> None:
        self._closed = True
        await self._transport.aclose()

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
                response = await self._send(method, url, json, params, headers, remaining)
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

    async def _send(
        self,
        method: str,
        url: str,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        remaining: float,
    ) -> UpstreamResponse:
        """One attempt, within what is left of the budget; its failure classified."""
        remaining = max(0.01, remaining)
        # Straight to the transport: an httpx2.Request in, an httpx2.Response out. The
        # AsyncClient above it (cookies, auth, redirects, default headers: nothing a call
        # between services uses) cost more CPU per call than the transport itself
        # (python -m bench.upstream).
        request = httpx2.Request(
            method,
            url,
            params=params,
            json=json,
            headers={**self._headers, **headers} if headers else self._headers,
            extensions={
                "timeout": {
                    "connect": min(self.timeouts.connect, remaining),
                    "read": min(self.timeouts.read, remaining),
                    "pool": None,
                }
            },
        )
        try:
            # Connect and each read are bounded above; this bounds the attempt as a whole
            # (an answer that trickles in would pass every read timeout).
            async with asyncio.timeout(remaining):
                response = await self._transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            raise _NotSent from exc
        except httpx2.TimeoutException as exc:
            raise _TimedOut from exc
        except (httpx2.TransportError, httpx2.DecodingError) as exc:
            raise _Broken from exc
        except TimeoutError:
            # The attempt's own budget: logged as the cause, like the transports' timeouts.
            raise _TimedOut from TimeoutError(f"no complete answer within {remaining:.2f} s")
        return UpstreamResponse(
            response.status_code,
            response.content,
            CIMultiDictProxy(CIMultiDict(response.headers.multi_items())),
            SentRequest(request.method, URL(str(request.url), encoded=True)),
        )
