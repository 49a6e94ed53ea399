"""The upstream services as the gateway sees them: replicas, balancing and circuit breakers.

Every replica address has its own :class:`~shop.kernel.http.CircuitBreaker`: a dead replica
is skipped while its siblings keep serving, and only when every replica of a service is
failing does the gateway fail fast with 503 instead of piling requests onto it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.clients import (
    Body,
    Headers,
    ProxyClient,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamPoolTimeout,
    UpstreamReadTimeout,
    UpstreamResponse,
)
from shop.kernel.http import CircuitBreaker, UpstreamTimeout, UpstreamUnavailable
from shop.kernel.topology import ServiceSpec

logger = logging.getLogger("gateway.upstreams")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class UpstreamBusy(UpstreamUnavailable):
    """Every replica's pool stayed full for the pool timeout (503, try again shortly)."""

    headers = {"Retry-After": "1"}


class CallerDisconnected(Exception):
    """The caller went away while its request body was being forwarded."""


class CallerBodyTooLarge(Exception):
    """The caller's body (sent without a length) passed the gateway's cap mid-stream."""


class CallerBody:
    """The caller's request body, pulled from ASGI ``receive`` as the upstream takes it.

    Nothing is buffered beyond the chunk in flight. ``started`` tells whether any of it was
    consumed, which is when a failed call can no longer be replayed on another replica.
    Past ``limit`` bytes the upload fails before the chunk that passes it goes upstream
    (``too_large``): the client library then drops the connection with the half-sent body
    instead of pooling it, and the upstream sees a caller that went away.
    """

    __slots__ = ("_first", "_limit", "_receive", "disconnected", "started", "too_large")

    def __init__(self, receive: Receive, first: bytes, *, limit: int) -> None:
        self._receive = receive
        self._first = first
        self._limit = limit
        self.started = False
        self.disconnected = False
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        sent = len(self._first)
        if self._first:
            yield self._first
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise CallerDisconnected("the caller disconnected mid-body")
            chunk: bytes = message.get("body", b"")
            sent += len(chunk)
            if sent > self._limit:
                self.too_large = True
                raise CallerBodyTooLarge(f"the body passed {self._limit} bytes")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


@dataclass(eq=False)
class Replica:
    """One address of a service, with its own breaker."""

    service: str
    url: str
    breaker: CircuitBreaker


class ServicePool:
    """The replicas of one service, taken in turn (round robin), skipping open circuits."""

    def __init__(
        self,
        spec: ServiceSpec,
        *,
        host: str,
        breaker: Callable[[], CircuitBreaker],
    ) -> None:
        self.name = spec.name
        self.replicas = [Replica(spec.name, url, breaker()) for url in spec.urls(host)]
        self._next = 0

    def _pick(self, tried: Sequence[Replica]) -> tuple[Replica, bool] | None:
        """The next replica whose circuit lets a call through, and whether it is a probe."""
        count = len(self.replicas)
        start = self._next
        self._next = (start + 1) % count
        for offset in range(count):
            replica = self.replicas[(start + offset) % count]
            if replica in tried:
                continue
            probing = replica.breaker.state == "half-open"
            if replica.breaker.allow():
                return replica, probing
        return None

    async def send(
        self,
        client: ProxyClient,
        method: str,
        target: str,
        headers: Headers,
        body: Body | CallerBody,
    ) -> tuple[UpstreamResponse, Replica]:
        """Send to one replica, failing over to another while the request has not left.

        ``target`` is the percent-encoded path and query. Raises
        :class:`~shop.kernel.http.UpstreamUnavailable` (503) or
        :class:`~shop.kernel.http.UpstreamTimeout` (504); an upstream's own error answers
        (a 500 or its own 503) are responses, passed through and not counted as failures.
        """
        tried: list[Replica] = []
        busy = False
        while True:
            picked = self._pick(tried)
            if picked is None:
                if busy:
                    raise UpstreamBusy(
                        f"The {self.name} service is busy: no connection to it came free in"
                        " time. Try again shortly."
                    )
                if tried:
                    raise UpstreamUnavailable(f"The {self.name} service cannot be reached.")
                raise UpstreamUnavailable(
                    f"The {self.name} service is unavailable (failing fast while it recovers)."
                )
            replica, probing = picked
            tried.append(replica)
            try:
                response = await client.send(self.name, method, replica.url + target, headers, body)
            except UpstreamConnectError as exc:
                replica.breaker.failure()
                logger.warning("%s %s%s: cannot connect: %s", method, replica.url, target, exc)
                if isinstance(body, CallerBody) and body.started:
                    raise UpstreamUnavailable(
                        f"The {self.name} service cannot be reached."
                    ) from exc
                continue
            except UpstreamPoolTimeout as exc:
                # Not the upstream's failure: its pool is full. Another replica may have
                # room; a probe that never went out reports as one that failed.
                if probing:
                    replica.breaker.failure()
                logger.warning("%s %s%s: %s", method, replica.url, target, exc)
                if isinstance(body, CallerBody) and body.started:
                    raise UpstreamBusy(
                        f"The {self.name} service is busy: no connection to it came free in"
                        " time. Try again shortly."
                    ) from exc
                busy = True
                continue
            except UpstreamReadTimeout as exc:
                replica.breaker.failure()
                logger.warning("%s %s%s: %s", method, replica.url, target, exc)
                raise UpstreamTimeout(f"The {self.name} service did not answer in time.") from exc
            except UpstreamBroken as exc:
                if isinstance(body, CallerBody) and body.too_large:
                    # The gateway stopped the upload, not the upstream: no failure to count
                    # (a probe that proved nothing still reports, as for a departed caller).
                    if probing:
                        replica.breaker.failure()
                    raise CallerBodyTooLarge("the caller's body passed the cap") from exc
                if isinstance(body, CallerBody) and body.disconnected:
                    # The client library reports the caller's departure as a broken upload;
                    # the upstream did nothing wrong, so its circuit does not hear of it.
                    if probing:
                        replica.breaker.failure()
                    raise CallerDisconnected("the caller disconnected mid-body") from exc
                replica.breaker.failure()
                logger.warning("%s %s%s: %s", method, replica.url, target, exc)
                raise UpstreamUnavailable(f"The {self.name} service failed to answer.") from exc
            except BaseException:
                # Cancelled (the caller left) or our own bug: a probe must still report, or
                # the breaker would wait forever for an answer that never comes.
                if probing:
                    replica.breaker.failure()
                raise
            replica.breaker.success()
            return response, replica

    async def get_json(self, client: ProxyClient, path: str, *, request_id: str) -> Any:
        """GET a JSON document from the service (JWKS, OpenAPI), through its breakers."""
        response, _ = await self.send(
            client,
            "GET",
            path,
            [(b"accept", b"application/json"), (b"x-request-id", request_id.encode())],
            None,
        )
        try:
            data = await response.read()
        except (UpstreamReadTimeout, UpstreamBroken) as exc:
            raise UpstreamUnavailable(f"The {self.name} service failed to answer.") from exc
        finally:
            await response.aclose()
        if response.status != 200:
            raise UpstreamUnavailable(
                f"The {self.name} service answered {path} with {response.status}."
            )
        try:
            return json.loads(data)
        except ValueError as exc:
            raise UpstreamUnavailable(f"The {self.name} service sent invalid JSON.") from exc
