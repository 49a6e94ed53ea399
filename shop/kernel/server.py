"""uvicorn's httptools protocol with the bounds it lacks, for every deployable's server.

uvicorn with httptools (what ``uvicorn[standard]`` picks) bounds neither the size of a
request's header block (llhttp has no limit: a 20 MB header was read and kept), nor the time
a client may take to send its head or its body (a client trickling a byte a second holds its
connection, and behind the gateway a pooled upstream connection, for as long as it likes),
nor how many connections one address may hold. :func:`shop.kernel.process.serve` runs every
deployable with :class:`BoundedHttpToolsProtocol`:

- a head over ``max_header_bytes`` is refused with 431;
- a head not complete ``header_timeout_seconds`` after its first byte (or after the
  connection opened) is answered 408 and the connection closed;
- a body not complete ``body_timeout_seconds`` after its head ends the same way (the app
  sees the client leave: http.disconnect), so the time is the client's whole upload;
- past ``max_connections_per_client`` open connections from one address (0: no cap), a
  new one is answered 503 and closed. The count is per server process.

The checks cost nothing on the usual request, whose head (and body) arrive in one read
smaller than the limit: no timer is armed for it, and the exact head size is summed only
when the reads of one head add up to more than the limit.

One more thing uvicorn does per answer is made cheaper: it writes a response's head and its
body to the socket separately, two system calls and two TCP segments per answer, and on
loopback the sender's call also runs the receiver's side of TCP. The protocol's transport
is :class:`CoalescingTransport`, which sends the writes of one event-loop iteration as one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shop.kernel.errors import PROBLEM_CONTENT_TYPE, problem_type

LIMITS_ENV = "SHOP_SERVER_LIMITS"
"""Where :func:`shop.kernel.process.serve` leaves the limits for its worker processes."""


@dataclass(frozen=True)
class ServerLimits:
    """What one server process allows a client."""

    max_header_bytes: int = 16 * 1024
    """The request line and every header together (h11's and Node's default)."""
    header_timeout_seconds: float = 10.0
    """From a connection's opening, or a request's first byte, to the end of its head."""
    body_timeout_seconds: float = 30.0
    """From the end of a request's head to the end of its body (1 MiB at 35 KB/s)."""
    max_connections_per_client: int = 0
    """Open connections one client address may hold in one server process (0: no cap)."""

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServerLimits:
        raw = os.environ.get(LIMITS_ENV)
        return cls(**json.loads(raw)) if raw else cls()


@functools.cache
def _limits() -> ServerLimits:
    # Read once per process: workers find the limits in the environment serve() set.
    return ServerLimits.from_env()


def _problem_response(status: int, reason: str, slug: str, title: str, detail: str) -> bytes:
    """A whole HTTP/1.1 problem+json response that closes the connection."""
    body = json.dumps(
        {"type": problem_type(slug), "title": title, "status": status, "detail": detail},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"content-type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"content-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _headers_too_large(limit: int) -> bytes:
    return _problem_response(
        431,
        "Request Header Fields Too Large",
        "request-header-fields-too-large",
        "Request header fields too large",
        f"The request line and headers exceed {limit} bytes, the most this server reads.",
    )


def _timed_out(what: str, seconds: float) -> bytes:
    return _problem_response(
        408,
        "Request Timeout",
        "request-timeout",
        "Request timeout",
        f"The request {what} did not arrive within {seconds:g} s.",
    )


def _too_many_connections(limit: int) -> bytes:
    return _problem_response(
        503,
        "Service Unavailable",
        "too-many-connections",
        "Too many connections",
        f"This address already holds {limit} open connections to this server; "
        "close one or wait for one to finish.",
    )


_open_per_client: Counter[str] = Counter()
"""Open connections by client address, in this process."""


class _Refused(Exception):
    """Raised from a parser callback to stop parsing and answer ``response`` instead."""

    def __init__(self, response: bytes) -> None:
        super().__init__("request refused")
        self.response = response


COALESCE_BYTES = 64 * 1024
"""Writes are held until the end of the loop iteration only while they add up to less."""


class CoalescingTransport:
    """A transport whose writes of one event-loop iteration go out in one write.

    A response's head and body (and the end of a chunked body) are written one after the
    other by the same task, with no await that yields between them: held until the loop's
    next callbacks, they leave together. Everything else is the wrapped transport's own.
    """

    __slots__ = ("_buffer", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._held = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(bytes(data))
        self._held += len(data)
        if self._held >= COALESCE_BYTES:
            self.flush()

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what is held now."""
        if self._buffer:
            data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
            self._buffer.clear()
            self._held = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._buffer.clear()
        self._held = 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on what a client sends, and how slowly."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.limits = _limits()
        self._in_head = False
        self._head_bytes = 0
        """Bytes of the current request head received in earlier reads."""
        self._read = 0
        """Length of the read being parsed now."""
        self._deadline: asyncio.TimerHandle | None = None
        """The head's or the body's, while one is being waited for."""
        self._counted: str | None = None
        """The client address this connection counts against."""

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
        cap = self.limits.max_connections_per_client
        if cap and self.client:
            address = self.client[0]
            if _open_per_client[address] >= cap:
                self._refuse(_too_many_connections(cap))
                return
            _open_per_client[address] += 1
            self._counted = address
        # Until the first request's head is in: a connection that sends nothing is closed too.
        self._arm(self.limits.header_timeout_seconds, self._head_timed_out)

    def eof_received(self) -> None:
        # The client is done sending, and the transport closes once this returns: what the
        # app has written already goes first.
        if isinstance(self.transport, CoalescingTransport):
            self.transport.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            _open_per_client[self._counted] -= 1
            if _open_per_client[self._counted] <= 0:
                del _open_per_client[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._read = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__.response)
                return
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head:
            # The head goes on past this read: count it, bounded by one read past the limit.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(_headers_too_large(self.limits.max_header_bytes))
            elif self._deadline is None:
                self._arm(self.limits.header_timeout_seconds, self._head_timed_out)
        elif self._deadline is None and self.cycle is not None and self.cycle.more_body:
            # The body goes on past this read (even once the app answered without it).
            self._arm(self.limits.body_timeout_seconds, self._body_timed_out)

    # --- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._deadline is not None:
            self._disarm()
        limit = self.limits.max_header_bytes
        # The head fits in what was read for it: no need to measure it exactly.
        if self._head_bytes + self._read > limit:
            size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
            if size > limit:
                raise _Refused(_headers_too_large(limit))
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        super().on_message_complete()

    # --- deadlines -----------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        self.logger.info("%s: request head not received in time; closing", self._who())
        self._refuse(_timed_out("head", self.limits.header_timeout_seconds))

    def _body_timed_out(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body:
            return
        self.logger.info("%s: request body not received in time; closing", self._who())
        # The app sees the client leave (http.disconnect) and answers no one; a client that
        # already has its answer (the app did not wait for the body) is just disconnected.
        answer = not cycle.response_started
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(_timed_out("body", self.limits.body_timeout_seconds) if answer else b"")

    def _who(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    # --- refusals ------------------------------------------------------------------------

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _refuse(self, response: bytes) -> None:
        """Answer without running the app, and close the connection."""
        self._in_head = False
        self._disarm()
        if not self.transport.is_closing():
            if response:
                self.transport.write(response)
            self.transport.close()
