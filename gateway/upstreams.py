"""Resilience: the upstream services as the gateway sees them, on the one HTTP stack.

Each routed service is a :class:`shop.kernel.http.Upstream` with a circuit breaker per
replica address: a dead replica is skipped while its siblings keep serving, and only when
every replica of a service is failing does the gateway fail fast with 503. A request goes
to another replica only while it has not left (connection refused, pool full) and no part
of its body was consumed; the gateway never sends a request twice. The failure kinds, the
retry rule, the breakers and the problems they are answered with are the kernel's, the
same as the services' calls to each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import httpx2

from gateway.settings import GatewaySettings
from shop.kernel.http import CircuitBreaker, RequestBody, Timeouts, Upstream
from shop.kernel.topology import ServiceSpec
from shop.kernel.transport import SocketTransport

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class CallerDisconnected(Exception):
    """The caller went away while its request body was being forwarded."""


class CallerBodyTooLarge(Exception):
    """The caller's body (sent without a length) passed the gateway's cap mid-stream."""


class CallerBody(RequestBody):
    """The caller's request body, pulled from ASGI ``receive`` as the upstream takes it.

    Nothing is buffered beyond the chunk in flight. Past ``limit`` bytes the upload fails
    before the chunk that passes it goes upstream (``fault``): the client library then drops
    the connection with the half-sent body instead of pooling it, and the upstream sees a
    caller that went away.
    """

    def __init__(self, receive: Receive, first: bytes, *, limit: int) -> None:
        self._receive = receive
        self._first = first
        self._limit = limit
        self.started = False
        self.fault: Exception | None = None

    @property
    def too_large(self) -> bool:
        return isinstance(self.fault, CallerBodyTooLarge)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        sent = len(self._first)
        if self._first:
            yield self._first
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.fault = CallerDisconnected("the caller disconnected mid-body")
                raise self.fault
            chunk: bytes = message.get("body", b"")
            sent += len(chunk)
            if sent > self._limit:
                self.fault = CallerBodyTooLarge(f"the body passed {self._limit} bytes")
                raise self.fault
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


def upstreams(
    settings: GatewaySettings,
    services: Mapping[str, ServiceSpec],
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
) -> dict[str, Upstream]:
    """An upstream per service, over ``transports[name]`` when given (tests: ASGI), else
    over sockets to the replicas at ``settings.upstream_host``.

    Over sockets each service has a pool of its own per replica address
    (``max_connections_per_upstream``), so a slow service fills its own pool, never
    another's; a request waits ``pool_timeout_seconds`` at most for a pooled connection.
    """
    connect, read, pool = (
        settings.connect_timeout_seconds,
        settings.read_timeout_seconds,
        settings.pool_timeout_seconds,
    )
    # Until the answer's head: a pooled connection, a connect, the head (a transport with
    # no pool, such as ASGITransport, has no wait for one).
    sockets = Timeouts(connect=connect, read=read, pool=pool, budget=pool + connect + read)
    in_process = Timeouts(connect=connect, read=read, budget=connect + read)

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(
            threshold=settings.breaker_threshold, reset_after=settings.breaker_reset_seconds
        )

    made = {}
    for name, spec in services.items():
        urls = spec.urls(settings.upstream_host)
        transport = (transports or {}).get(name)
        made[name] = Upstream(
            name,
            urls,
            transport=transport
            or SocketTransport(limit=0, limit_per_host=settings.max_connections_per_upstream),
            timeouts=in_process if transport else sockets,
            # Each replica once, at once: only a request that never left goes again.
            retries=len(urls) - 1,
            backoff=0.0,
            breakers=breaker,
        )
    return made
