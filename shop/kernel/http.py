"""Calls between services, built for failure.

One :class:`Upstream` per service a deployable calls, made in its lifespan: a pooled
httpx client (any transport: sockets in production, ASGI in tests), explicit connect and
read timeouts inside a per-call budget, retries with jittered exponential backoff only where
a retry is safe, and a circuit breaker that fails fast while the upstream is down and lets
one probe through now and then to find it back.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

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


def expect(response: httpx2.Response, *statuses: int) -> Any:
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


class Upstream:
    """A resilient client for one upstream service (round-robin over its replicas)."""

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
        self._client = httpx2.AsyncClient(
            transport=transport,
            headers=dict(headers or {}),
            timeout=httpx2.Timeout(timeouts.read, connect=timeouts.connect),
            limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx2.Response:
        """Send one call; retried only if ``idempotent`` (or if it never left)."""
        deadline = time.monotonic() + self.timeouts.budget
        attempt = 0
        while True:
            if not self.breaker.allow():
                raise UpstreamUnavailable(
                    f"The {self.name} service is unavailable (failing fast while it recovers)."
                )
            remaining = deadline - time.monotonic()
            timeout = httpx2.Timeout(
                max(0.01, min(self.timeouts.read, remaining)),
                connect=max(0.01, min(self.timeouts.connect, remaining)),
            )
            url = self.base_urls[next(self._next)] + path
            error: ShopError
            try:
                response = await self._client.request(
                    method, url, json=json, params=params, headers=headers, timeout=timeout
                )
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                # The request never left: retrying cannot apply it twice.
                retryable = True
                error = UpstreamUnavailable(f"The {self.name} service cannot be reached.")
                logger.warning("%s %s: %r", method, url, exc)
            except httpx2.TimeoutException as exc:
                retryable = idempotent
                error = UpstreamTimeout(f"The {self.name} service did not answer in time.")
                logger.warning("%s %s: %r", method, url, exc)
            except httpx2.TransportError as exc:
                retryable = idempotent
                error = UpstreamUnavailable(f"The {self.name} service failed to answer.")
                logger.warning("%s %s: %r", method, url, exc)
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
