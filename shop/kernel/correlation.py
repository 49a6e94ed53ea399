"""The request id and the W3C trace context of the request being handled, in one place.

Every app's edge (:class:`shop.kernel.edge.EdgeMiddleware`, and the gateway's proxy in
front of its FastAPI app) reads ``X-Request-ID`` and ``traceparent`` from the request,
keeps them in a context variable while the request is handled (:func:`begin`), and answers
with ``X-Request-ID``. The one HTTP stack (:mod:`shop.kernel.http`) adds both to every call
it makes (:func:`outgoing`), and :class:`RequestIdFilter` writes the id into every log line.

Tracing plugs in here: :func:`begin` is where an incoming context is extracted and
:func:`outgoing` where it is injected into a call, so an OpenTelemetry propagator replaces
these two functions and nothing else.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
TRACEPARENT_HEADER = "traceparent"
REQUEST_ID = b"x-request-id"
TRACEPARENT = b"traceparent"

_REQUEST_ID_RE = re.compile(rb"[\x21-\x7e]{1,128}")
"""Printable ASCII without spaces, 1 to 128 characters: it ends up in every log line."""
_TRACEPARENT_RE = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


class Correlation:
    """What ties the work of one request together across processes and log lines."""

    __slots__ = ("request_id", "traceparent")

    def __init__(self, request_id: str, traceparent: str | None = None) -> None:
        self.request_id = request_id
        self.traceparent = traceparent
        """A valid W3C ``traceparent`` (version 00), or ``None``: none came, none is made."""


_current: ContextVar[Correlation | None] = ContextVar("shop_correlation", default=None)


def new_request_id() -> str:
    """32 random hex digits."""
    return os.urandom(16).hex()


def request_id(incoming: bytes | None) -> str:
    """The caller's request id when it is sane (printable, at most 128 characters), else a
    new one."""
    if incoming is not None and _REQUEST_ID_RE.fullmatch(incoming):
        return incoming.decode("ascii")
    return new_request_id()


def traceparent(incoming: bytes | None) -> str | None:
    """A valid ``traceparent`` (W3C Trace Context level 1, section 3.2) as version 00, or
    ``None`` (missing or invalid: wrong shape, upper-case hex, all-zero ids, version ``ff``,
    extra fields on version 00)."""
    if not incoming:
        return None
    value = incoming.strip()
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    rest = value[match.end() :]
    if (
        version == b"ff"
        or trace_id == _ZERO_TRACE
        or parent_id == _ZERO_SPAN
        # Version 00 has exactly four fields; a later version may append more.
        or (rest != b"" if version == b"00" else rest != b"" and rest[:1] != b"-")
    ):
        return None
    return f"00-{trace_id.decode()}-{parent_id.decode()}-{flags.decode()}"


def child_traceparent(parent: str | None) -> str:
    """The ``traceparent`` of a new hop: the same trace and flags with a new parent span id,
    or a new trace when there is none (the gateway is a hop of its own)."""
    span = os.urandom(8).hex()
    if parent is None:
        return f"00-{os.urandom(16).hex()}-{span}-00"
    return f"{parent[:36]}{span}{parent[52:]}"


def begin(request_id: str, traceparent: str | None) -> Token[Correlation | None]:
    """Handle a request under this id and trace context until :func:`end` with the token."""
    return _current.set(Correlation(request_id, traceparent))


def end(token: Token[Correlation | None]) -> None:
    """Back to the context before :func:`begin` (an in-process caller's, or none)."""
    _current.reset(token)


@contextmanager
def scope(traceparent: str | None) -> Iterator[None]:
    """Work that is not a request (an event's handler) under a fresh request id, continuing
    the trace it came with."""
    token = begin(new_request_id(), traceparent)
    try:
        yield
    finally:
        end(token)


def current() -> Correlation | None:
    """The correlation of the request being handled, if any."""
    return _current.get()


def outgoing() -> list[tuple[bytes, bytes]]:
    """The headers every outgoing call carries for the request being handled."""
    correlation = _current.get()
    if correlation is None:
        return []
    if correlation.traceparent is None:
        return [(REQUEST_ID, correlation.request_id.encode())]
    return [
        (REQUEST_ID, correlation.request_id.encode()),
        (TRACEPARENT, correlation.traceparent.encode()),
    ]


class RequestIdFilter(logging.Filter):
    """Gives every log record a ``request_id`` (``-`` outside a request) for the formats.

    Installed on handlers, not loggers, so records that propagate from any logger get it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        correlation = _current.get()
        record.request_id = "-" if correlation is None else correlation.request_id
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with the request id in every line.

    uvicorn's own loggers keep their handlers; the application's loggers (``shop.*``,
    ``gateway``, ...) propagate to the root logger, which writes warnings and errors to
    stderr in the same format.
    """
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {
            "default": {
                **LOGGING_CONFIG["formatters"]["default"],
                "fmt": "%(levelprefix)s [%(request_id)s] %(message)s",
            },
            "access": {
                **LOGGING_CONFIG["formatters"]["access"],
                "fmt": '%(levelprefix)s [%(request_id)s] %(client_addr)s - "%(request_line)s"'
                " %(status_code)s",
            },
            "app": {
                "format": "%(levelname)s [%(request_id)s] %(name)s: %(message)s",
            },
        },
        "handlers": {
            name: {**handler, "filters": ["request_id"]}
            for name, handler in LOGGING_CONFIG["handlers"].items()
        }
        | {
            "app": {
                "formatter": "app",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["app"], "level": "WARNING"},
    }
    return config
