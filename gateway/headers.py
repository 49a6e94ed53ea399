"""What the gateway does to headers on the way in and out.

Kept apart from the proxy so each rule is one small function with its own tests.
"""

from __future__ import annotations

import os
import re
import uuid

from shop.kernel.http import CLIENT_ADDRESS_HEADER, EDGE_TOKEN_HEADER, INTERNAL_TOKEN_HEADER

REQUEST_ID = "x-request-id"
TRACEPARENT = "traceparent"

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    # Services trust this header on service-to-service calls: a caller must never set it.
    INTERNAL_TOKEN_HEADER.lower().encode("latin-1"),
    # Services believe the caller's address only from the gateway: set below, never passed on.
    EDGE_TOKEN_HEADER.lower().encode("latin-1"),
    CLIENT_ADDRESS_HEADER.lower().encode("latin-1"),
    # The client library writes the upstream's own Host; the caller's goes as X-Forwarded-Host.
    b"host",
    # The gateway's server already answered any 100-continue with the caller.
    b"expect",
    # Replaced below by the gateway's own values.
    REQUEST_ID.encode(),
    TRACEPARENT.encode(),
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
}

DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {
    # The gateway's server writes its own; forwarding the upstream's would send two.
    b"date",
    b"server",
    # The gateway echoes the request id it forwarded.
    REQUEST_ID.encode(),
    # The gateway adds its own (every service sends one too).
    b"x-content-type-options",
}

_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names a ``Connection`` header declares hop-by-hop (RFC 9110 7.6.1)."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def request_id(incoming: str | None) -> str:
    """The caller's request id when it is sane (printable, short), else a new uuid4 hex.

    A request id ends up in every service's logs: an unbounded or binary one is replaced.
    """
    if incoming is not None and _REQUEST_ID_RE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def traceparent(incoming: str | None) -> str:
    """The W3C ``traceparent`` to forward: same trace and flags, the gateway as new parent.

    A missing or invalid one (W3C Trace Context level 1, section 3.2) starts a new trace.
    """
    span = os.urandom(8).hex()
    if incoming is not None:
        match = _TRACEPARENT_RE.match(incoming.strip())
        if match is not None:
            version, trace_id, parent_id, flags = match.groups()
            rest = incoming.strip()[match.end() :]
            valid = (
                version != "ff"
                and trace_id != _ZERO_TRACE
                and parent_id != _ZERO_SPAN
                # Version 00 has exactly four fields; a later version may append more.
                and (rest == "" if version == "00" else rest == "" or rest.startswith("-"))
            )
            if valid:
                return f"00-{trace_id}-{span}-{flags}"
    return f"00-{os.urandom(16).hex()}-{span}-00"
