"""The one HTTP stack: every call one process makes to another, built for failure.

The gateway's proxy and the services' calls to each other go through an :class:`Upstream`
per upstream service, made at start-up: explicit connect, pool and read timeouts inside a
per-call budget, a circuit breaker per replica (or one for the whole upstream), retries
with jittered exponential backoff only where a retry is safe, and one classification of
what can go wrong (:class:`CallFailure`) with the problem each failure is answered with.

One way to send: an ``httpx2.Request`` handed to an ``httpx2`` transport. Over sockets
(production: replicas on 127.0.0.1) the transport is
:class:`shop.kernel.transport.SocketTransport`, pooled HTTP/1.1 connections on the event
loop's own sockets, which costs far less CPU per call than httpx2's own pool or an aiohttp
session (docs/benchmarks.md, docs/gateway.md); the tests give ``httpx2.ASGITransport`` to
wire apps in process. Everything above the transport
(headers, timeouts, retries, breakers, the answer) is the same code on both.

Every call carries the request id and ``traceparent`` of the request being handled
(:func:`shop.kernel.correlation.outgoing`, added in :meth:`Upstream._headers` only).

Two ways to answer: :meth:`Upstream.request` reads the body whole (calls between services:
:class:`UpstreamResponse`, read with :func:`expect`), :meth:`Upstream.stream` hands the body
over as it arrives (the gateway: :class:`StreamedResponse`).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

import anyio
import httpx2
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from shop.kernel import correlation
from shop.kernel.errors import ServiceUnavailable, ShopError
from shop.kernel.transport import STREAM, SocketTransport, raw_headers

logger = logging.getLogger("shop.http")

T = TypeVar("T")

INTERNAL_TOKEN_HEADER = "X-Shop-Internal-Token"  # noqa: S105 (a header name)
"""Proves a call comes from another service of the shop; the gateway never forwards it."""
EDGE_TOKEN_HEADER = "X-Shop-Edge-Token"  # noqa: S105 (a header name)
"""Proves a request comes through the gateway (``SHOP_EDGE_TOKEN``); never a client's."""
CLIENT_ADDRESS_HEADER = "X-Shop-Client-Address"
"""The address the gateway's caller connected from; trusted only with the edge token."""


# --- the problems an upstream's failure is answered with ----------------------------------


class UpstreamUnavailable(ServiceUnavailable):
    """The upstream refused the connection, failed, or its circuit is open (503)."""


class UpstreamBusy(UpstreamUnavailable):
    """No pooled connection to the upstream came free in time (503, try again shortly)."""

    headers = {"Retry-After": "1"}


class UpstreamTimeout(ShopError):
    status = 504
    slug = "upstream-timeout"
    title = "Upstream timeout"


class BadUpstreamResponse(ShopError):
    """The upstream answered something this caller cannot use: an unexpected status, a body
    that is not JSON or not of the expected shape (a bug, not an outage)."""

    status = 502
    slug = "bad-gateway"
    title = "Bad upstream response"


# --- what can go wrong with one attempt ----------------------------------------------------


class CallFailure(Exception):
    """One attempt at a call failed; the subclass says how far it got.

    ``sent``: the request may have reached the upstream, so only an idempotent call may be
    sent again. ``counts``: the failure counts toward the replica's circuit breaker.
    """

    sent: ClassVar[bool] = True
    counts: ClassVar[bool] = True

    def problem(self, service: str) -> ShopError:
        """What the caller of a call that ended with this failure is answered."""
        return UpstreamUnavailable(f"The {service} service failed to answer.")


class NotSent(CallFailure):
    """No connection could be made: the request never left, another attempt may take it."""

    sent = False

    def problem(self, service: str) -> ShopError:
        return UpstreamUnavailable(f"The {service} service cannot be reached.")


class PoolFull(NotSent):
    """No pooled connection came free in time: the request never left.

    The caller's own pool is full (the upstream's answers are slow, or slow callers hold its
    connections); that says nothing about whether the upstream is up, so no circuit counts it.
    """

    counts = False

    def problem(self, service: str) -> ShopError:
        return UpstreamBusy(
            f"The {service} service is busy: no connection to it came free in time."
            " Try again shortly."
        )


class TimedOut(CallFailure):
    """Sent, but no (complete) answer in time."""

    def problem(self, service: str) -> ShopError:
        return UpstreamTimeout(f"The {service} service did not answer in time.")


class Broken(CallFailure):
    """Sent, then the connection failed, the upstream broke the protocol, or an upstream
    wired in process raised."""


class FailingAnswer(CallFailure):
    """The upstream answered 502, 503 or 504 to a call that reads the body whole: it is up
    but cannot serve, which a retry may fix (the gateway passes such answers on instead)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"answered {status}")
        self.status = status

    def problem(self, service: str) -> ShopError:
        return UpstreamUnavailable(f"The {service} service is unavailable ({self.status}).")


def classify(exc: Exception) -> CallFailure:
    """The failure an exception raised by a transport (or an in-process upstream) stands for."""
    if isinstance(exc, CallFailure):
        return exc
    if isinstance(exc, httpx2.PoolTimeout):
        return PoolFull(str(exc) or "no pooled connection came free in time")
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
        return NotSent(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return TimedOut(str(exc) or "no complete answer in time")
    return Broken(str(exc) or type(exc).__name__)


def may_retry(failure: CallFailure, *, idempotent: bool) -> bool:
    """The one retry rule: a call that never left may always go again, any other only when
    sending it twice does no harm."""
    return idempotent or not failure.sent


class RequestBody(httpx2.AsyncByteStream):
    """A request body streamed from the caller's own caller (the gateway's), read once.

    ``started`` tells whether any of it was consumed, after which the call cannot be sent
    again. ``fault`` is set when the body itself failed (the caller left, or sent too much):
    the call then fails with it, and no circuit hears of it.
    """

    started: bool = False
    fault: Exception | None = None


# --- answers -------------------------------------------------------------------------------


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
            raise BadUpstreamResponse(
                f"{self._call} answered {self.status_code} with a body"
                f" that is not JSON: {self.text[:200]!r}"
            ) from exc

    @property
    def _call(self) -> str:
        return f"{self.request.method} {self.request.url.path}"


def _charset(content_type: str | None) -> str:
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value.strip("\"' "):
            return value.strip("\"' ")
    return "utf-8"


MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError)
"""What reading a body of the wrong shape raises (pydantic's ValidationError is a
ValueError): the upstream's fault, answered 502."""


@overload
def expect(response: UpstreamResponse, *statuses: int) -> Any: ...
@overload
def expect(response: UpstreamResponse, *statuses: int, read: Callable[[Any], T]) -> T: ...
def expect(
    response: UpstreamResponse, *statuses: int, read: Callable[[Any], Any] | None = None
) -> Any:
    """The decoded JSON body of a response with one of ``statuses`` (``None`` if empty),
    passed through ``read`` when given; :class:`BadUpstreamResponse` (502) for any other
    status, a body that is not JSON, or one ``read`` cannot take (``KeyError``,
    ``TypeError``, ``ValueError``, ...)."""
    if response.status_code not in statuses:
        raise BadUpstreamResponse(
            f"{response._call} answered {response.status_code}: {response.text[:200]}"
        )
    body = response.json() if response.content else None
    if read is None:
        return body
    try:
        return read(body)
    except MALFORMED as exc:
        raise BadUpstreamResponse(
            f"{response._call} answered {response.status_code} with a body of the wrong"
            f" shape ({type(exc).__name__}: {exc}): {response.text[:200]!r}"
        ) from exc


class StreamedResponse:
    """An answer whose head has arrived; its body is read chunk by chunk, undecoded.

    A failure while reading the body counts against the replica that sent it and raises
    :class:`TimedOut` or :class:`Broken`.
    """

    __slots__ = ("_chunks", "_pending", "_read_timeout", "_replica", "_response")

    def __init__(
        self, response: httpx2.Response, replica: Replica, read_timeout: float | None
    ) -> None:
        self._response = response
        self._replica = replica
        self._read_timeout = read_timeout
        self._chunks: AsyncIterator[bytes] = aiter(response.stream)  # type: ignore[arg-type]
        self._pending: bytes | None = None

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The header pairs as sent (a header sent twice is there twice), names as written."""
        return self._response.headers.raw

    async def _next(self) -> bytes:
        try:
            if self._read_timeout is None:  # the transport bounds each read itself
                return await anext(self._chunks, b"")
            with anyio.fail_after(self._read_timeout):
                return await anext(self._chunks, b"")
        except Exception as exc:
            failure = classify(exc)
            if failure.counts:
                self._replica.breaker.failure()
            raise failure from exc

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it arrives; ``b""`` once the body is complete."""
        # One chunk of look-ahead answers at_eof, so the last chunk can go as the final one.
        chunk = self._pending if self._pending is not None else await self._next()
        self._pending = await self._next() if chunk else b""
        return chunk

    @property
    def at_eof(self) -> bool:
        """Whether the body is complete (so the last chunk can be sent as the final one)."""
        return self._pending == b""

    async def read(self) -> bytes:
        """The rest of the body at once."""
        chunks = []
        while chunk := await self.read_chunk():
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Give the connection back to the pool (or drop it if the body was not read)."""
        closing = getattr(self._chunks, "aclose", None)
        if closing is not None:
            await closing()
        stream = self._response.stream
        if isinstance(stream, httpx2.AsyncByteStream):
            await stream.aclose()


# --- timeouts and breakers -----------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    connect: float = 1.0
    read: float = 5.0
    """The longest wait for the answer's head, and between two reads of its body."""
    budget: float = 8.0
    """The whole call, retries and backoff included (a streamed call: until its head)."""
    pool: float | None = None
    """The longest wait for a pooled connection to come free (``None``: no limit)."""


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


_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~/:@!$&'()*+,;=]*")
"""A path with nothing to percent-encode."""


def request_target(path: str, params: Mapping[str, Any] | None = None) -> str:
    """``path`` and ``params`` as one percent-encoded target, as httpx2 encodes them.

    Made once per call, not once per attempt, and without parsing a whole URL: httpx2's
    parser costs about 30 us a call, a tenth of what a call costs its caller.
    """
    if not _PLAIN_PATH.fullmatch(path):
        url = httpx2.URL(path) if params is None else httpx2.URL(path, params=params)
        return url.raw_path.decode("ascii")
    query = str(httpx2.QueryParams(params)) if params else ""
    return f"{path}?{query}" if query else path


class Replica:
    """One address of an upstream, with its circuit breaker."""

    __slots__ = ("_base", "breaker", "host", "url")

    def __init__(self, url: str, breaker: CircuitBreaker) -> None:
        self.url = url
        self.breaker = breaker
        self._base = httpx2.URL(url)
        self.host = self._base.netloc
        """The ``Host`` header of a call to it."""

    def target(self, target: str) -> httpx2.URL:
        """The URL of ``target``, a path and query already percent-encoded, on this replica.

        Built from the parsed address without parsing ``target`` again: httpx2's URL parser
        costs about 11 us a call, more than the rest of a proxied request's own work; the
        target is sent as it came.
        """
        path, mark, query = target.partition("?")
        url = httpx2.URL.__new__(httpx2.URL)
        url._uri_reference = self._base._uri_reference._replace(
            path=path, query=query if mark else None
        )
        return url


class Upstream:
    """A resilient client for one upstream service (round robin over its replicas).

    Sends ``httpx2`` requests through ``transport``: by default (``None``) an
    :class:`~shop.kernel.transport.SocketTransport` to the replicas' sockets, or the
    ``httpx2`` transport given (``ASGITransport`` in tests). :meth:`aclose` closes it.

    ``breaker`` is one circuit for every replica (the default); ``breakers`` makes one per
    replica instead, so a dead replica is skipped while its siblings serve. A call tries the
    replicas not tried yet first. ``retries`` is how many times a failed call may go again
    (:func:`may_retry` says whether it may), after a jittered backoff of about ``backoff``
    doubled each time (``0``: at once).
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
        breakers: Callable[[], CircuitBreaker] | None = None,
    ) -> None:
        if not base_urls:
            raise ValueError(f"upstream {name} has no address")
        self.name = name
        self.base_urls = list(base_urls)
        self.timeouts = timeouts
        self.retries = retries
        self.backoff = backoff
        self.breaker = breaker or CircuitBreaker()
        """The circuit of every replica, unless ``breakers`` gave each its own."""
        self.replicas = [
            Replica(url, breakers() if breakers else self.breaker) for url in base_urls
        ]
        self._next = 0
        self._closed = False
        self._transport = SocketTransport() if transport is None else transport
        # The socket transport bounds each read of a body itself; any other is watched.
        self._read_timeout = None if isinstance(self._transport, SocketTransport) else timeouts.read
        self._raw_headers = [
            (name.encode(), value.encode()) for name, value in (headers or {}).items()
        ]
        self._timeout = {
            "connect": timeouts.connect,
            "read": timeouts.read,
            "write": None,
            "pool": timeouts.pool,
        }
        self._stream_extensions = {"timeout": self._timeout, STREAM: True}

    async def aclose(self) -> None:
        self._closed = True
        await self._transport.aclose()

    # --- the one send path -----------------------------------------------------------------

    def _headers(self, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Every header of a call: the upstream's, its own, the request's correlation."""
        return [*self._raw_headers, *extra, *correlation.outgoing()]

    def _pick(self, tried: Sequence[Replica], repeat: bool) -> tuple[Replica, bool] | None:
        """The next replica whose circuit lets a call through (not tried yet if possible,
        again if ``repeat``), and whether the call is its circuit's probe."""
        count = len(self.replicas)
        start = self._next
        self._next = (start + 1) % count
        for again in (False, True) if repeat else (False,):
            for offset in range(count):
                replica = self.replicas[(start + offset) % count]
                if replica in tried and not again:
                    continue
                probing = replica.breaker.state == "half-open"
                if replica.breaker.allow():
                    return replica, probing
        return None

    async def _call(
        self,
        method: str,
        target: str,
        attempt: Callable[[Replica, float], Awaitable[T]],
        *,
        idempotent: bool,
        body: httpx2.AsyncByteStream | None = None,
    ) -> T:
        """Run ``attempt(replica, seconds left)`` until one succeeds or the rules say stop."""
        if self._closed:
            raise RuntimeError(f"the upstream client of {self.name} is closed")
        deadline = time.monotonic() + self.timeouts.budget
        tried: list[Replica] = []
        error: ShopError | None = None
        busy = False
        while True:
            picked = self._pick(tried, repeat=self.retries >= len(self.replicas))
            if picked is None:
                if error is not None:
                    raise error
                raise UpstreamUnavailable(
                    f"The {self.name} service is unavailable (failing fast while it recovers)."
                )
            replica, probing = picked
            tried.append(replica)
            try:
                result = await attempt(replica, deadline - time.monotonic())
            except ShopError:
                # Refused before anything was sent (a header the transport cannot send).
                if probing:
                    replica.breaker.failure()
                raise
            except Exception as exc:
                failure = classify(exc)
                if isinstance(body, RequestBody) and body.fault is not None:
                    # The caller's body failed, not the upstream: no circuit hears of it (a
                    # probe that proved nothing still reports, or it would never end).
                    if probing:
                        replica.breaker.failure()
                    raise body.fault from exc
                if failure.counts or probing:
                    replica.breaker.failure()
                logger.warning(
                    "%s %s%s: %s: %s", method, replica.url, target, type(failure).__name__, failure
                )
                busy = busy or isinstance(failure, PoolFull)
                error = failure.problem(self.name)
                if busy and isinstance(failure, NotSent):
                    error = PoolFull().problem(self.name)
                retryable = may_retry(failure, idempotent=idempotent) and not (
                    isinstance(body, RequestBody) and body.started
                )
                if not retryable or len(tried) > self.retries:
                    raise error from exc
                delay = (
                    random.uniform(0, self.backoff * 2 ** len(tried))  # noqa: S311 (jitter)
                    if self.backoff
                    else 0.0
                )
                if time.monotonic() + delay >= deadline:
                    raise error from exc
                if delay:
                    await anyio.sleep(delay)
                continue
            except BaseException:
                # Cancelled (the caller left): a probe must still report, or the breaker
                # would wait forever for an answer that never comes.
                if probing:
                    replica.breaker.failure()
                raise
            replica.breaker.success()
            return result

    # --- reading the body whole: calls between services --------------------------------------

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
        """Send one call; retried only if ``idempotent`` (or if it never left).

        An answer of 502, 503 or 504 counts as a failure (and is retried like one).
        """
        extra = [(k.encode(), v.encode()) for k, v in headers.items()] if headers else []
        target = request_target(path, params)

        async def attempt(replica: Replica, remaining: float) -> UpstreamResponse:
            remaining = max(0.01, remaining)
            # Straight to the transport: an httpx2.Request in, an httpx2.Response out. The
            # AsyncClient above it (cookies, auth, redirects, default headers: nothing a call
            # between services uses) cost more CPU per call than the transport itself.
            request = httpx2.Request(
                method,
                replica.target(target),
                json=json,
                headers=self._headers(extra),
                extensions={"timeout": self._timeouts(remaining)},
            )
            # Connect and each read are bounded by the transport; this bounds the attempt as
            # a whole (an answer that trickles in would pass every read timeout).
            try:
                async with asyncio.timeout(remaining):
                    response = await self._transport.handle_async_request(request)
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except TimeoutError as exc:
                if isinstance(exc, httpx2.TimeoutException):
                    raise
                raise TimedOut(f"no complete answer within {remaining:.2f} s") from exc
            if response.status_code in _FAILING_ANSWERS:
                raise FailingAnswer(response.status_code)
            return UpstreamResponse(
                response.status_code,
                response.content,
                CIMultiDictProxy(CIMultiDict(response.headers.multi_items())),
                SentRequest(request.method, URL(str(request.url), encoded=True)),
            )

        return await self._call(method, path, attempt, idempotent=idempotent)

    def _timeouts(self, remaining: float) -> dict[str, float | None]:
        pool = self.timeouts.pool
        return {
            "connect": min(self.timeouts.connect, remaining),
            "read": min(self.timeouts.read, remaining),
            "write": None,
            "pool": None if pool is None else min(pool, remaining),
        }

    # --- streaming: the gateway's proxy ----------------------------------------------------

    async def stream(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | RequestBody | None,
    ) -> StreamedResponse:
        """Send ``target`` (path and query, percent-encoded) and answer once the head is in.

        ``headers`` go as they are, after the replica's ``Host`` (the caller frames the body:
        ``Content-Length`` or ``Transfer-Encoding``). Never sent twice: a call goes to
        another replica only while it has not left (connection refused, pool full) and its
        body was not consumed. Any answer, a 5xx included, is the upstream's to give.
        """
        stream = body if isinstance(body, RequestBody) else httpx2.ByteStream(body or b"")
        sent = self._headers(headers)
        extensions = self._stream_extensions

        async def attempt(replica: Replica, remaining: float) -> StreamedResponse:
            request = httpx2.Request(
                method,
                replica.target(target),
                headers=raw_headers([(b"host", replica.host), *sent]),
                stream=stream,
                extensions=extensions,
            )
            if self._read_timeout is None:
                # The socket transport bounds the pool wait, the connect and each read
                # itself: no deadline of our own to arm on every proxied request.
                response = await self._transport.handle_async_request(request)
                return StreamedResponse(response, replica, None)
            try:
                async with asyncio.timeout(max(0.01, remaining)):
                    response = await self._transport.handle_async_request(request)
            except TimeoutError as exc:
                if isinstance(exc, httpx2.TimeoutException):
                    raise
                raise TimedOut(f"no answer within {remaining:.2f} s") from exc
            return StreamedResponse(response, replica, self._read_timeout)

        return await self._call(method, target, attempt, idempotent=False, body=stream)

    async def status_of(self, replica: Replica, path: str) -> int:
        """The status of a ``GET`` to one replica, around its circuit (readiness checks:
        they report the upstream as it is, and must neither count nor be refused). The
        caller bounds the wait."""
        request = httpx2.Request(
            "GET",
            replica.target(path),
            headers=[(b"host", replica.host), *self._headers([])],
            stream=httpx2.ByteStream(b""),
            extensions={"timeout": self._timeout},
        )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except Exception as exc:
            raise classify(exc) from exc
        return response.status_code


_FAILING_ANSWERS = frozenset({502, 503, 504})
