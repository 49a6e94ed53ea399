"""uvicorn's httptools protocol with the bounds it lacks, for every deployable's server.

uvicorn with httptools (what ``uvicorn[standard]`` picks) bounds neither the size of a
request's header block (llhttp has no limit: a 20 MB header was read and kept) nor the time a
client may take to send it. :func:`shop.kernel.process.serve` runs every deployable with
:class:`BoundedHttpToolsProtocol`, which refuses a header block over ``max_header_bytes``
with ``431`` and closes the connection.

The checks cost nothing on the usual request, whose head arrives in one read smaller than
the limit: the exact size is summed only when the reads of one head add up to more.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass

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


class _Refused(Exception):
    """Raised from a parser callback to stop parsing and answer ``response`` instead."""

    def __init__(self, response: bytes) -> None:
        super().__init__("request refused")
        self.response = response


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over the size limit (431)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.limits = _limits()
        self._in_head = False
        self._head_bytes = 0
        """Bytes of the current request head received in earlier reads."""
        self._read = 0
        """Length of the read being parsed now."""

    # --- asyncio.Protocol ---------------------------------------------------------------

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

    # --- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        limit = self.limits.max_header_bytes
        # The head fits in what was read for it: no need to measure it exactly.
        if self._head_bytes + self._read > limit:
            size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
            if size > limit:
                raise _Refused(_headers_too_large(limit))
        super().on_headers_complete()

    # --- refusals ------------------------------------------------------------------------

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _refuse(self, response: bytes) -> None:
        """Answer without running the app, and close the connection."""
        self._in_head = False
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
