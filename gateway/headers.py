"""What the gateway does to headers on the way in and out.

Kept apart from the proxy so each rule is one small function with its own tests.
"""

from __future__ import annotations

from shop.kernel.correlation import REQUEST_ID, TRACEPARENT
from shop.kernel.http import CLIENT_ADDRESS_HEADER, EDGE_TOKEN_HEADER, INTERNAL_TOKEN_HEADER

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
    # Read by the proxy; the HTTP stack sends the request's own (shop.kernel.correlation).
    REQUEST_ID,
    TRACEPARENT,
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
}

DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {
    # The gateway's server writes its own; forwarding the upstream's would send two.
    b"date",
    b"server",
    # The gateway echoes the request id it forwarded.
    REQUEST_ID,
    # The gateway adds its own (every service sends one too).
    b"x-content-type-options",
}


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names a ``Connection`` header declares hop-by-hop (RFC 9110 7.6.1)."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}
