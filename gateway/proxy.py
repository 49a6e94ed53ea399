"""The hot path: a pure ASGI layer that proxies every routed public path.

It runs in front of all of FastAPI (its middleware stack, routing and dependency
injection), which the measured FastAPI catch-all proxy paid for on every request
(docs/gateway.md). Paths the gateway answers itself (``/healthz``, ``/readyz``,
``/openapi.json``, ``/docs``) and paths no route claims fall through to the FastAPI app,
whose handlers render problem+json.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.clients import UpstreamBroken, UpstreamReadTimeout
from gateway.headers import (
    DROPPED_REQUEST_HEADERS,
    DROPPED_RESPONSE_HEADERS,
    connection_tokens,
    request_id,
    traceparent,
)
from gateway.upstreams import CallerBody, CallerBodyTooLarge, CallerDisconnected, ServicePool
from shop.kernel.edge import AMBIGUOUS_AUTHORIZATION, NOSNIFF
from shop.kernel.errors import PROBLEM_CONTENT_TYPE, NotFound, ShopError, problem_body
from shop.kernel.http import CLIENT_ADDRESS_HEADER, EDGE_TOKEN_HEADER

if TYPE_CHECKING:
    from gateway.runtime import Gateway

logger = logging.getLogger("gateway.proxy")

CLIENT_ADDRESS = CLIENT_ADDRESS_HEADER.lower().encode("latin-1")
EDGE_TOKEN = EDGE_TOKEN_HEADER.lower().encode("latin-1")

OWN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
"""Answered by the gateway itself, never proxied."""


def is_internal(path: str) -> bool:
    """``/internal`` and below: service-to-service endpoints, never reachable from outside."""
    first = path.lstrip("/").split("/", 1)[0]
    return first.lower() == "internal"


def has_dot_segment(path: str) -> bool:
    """``.`` or ``..`` segments, which some servers resolve and some do not.

    Refusing them keeps the gateway's routing decision and the upstream's reading of the
    path the same (``/products/../internal/x`` must not become ``/internal/x`` upstream).
    """
    return "/." in path and any(segment in (".", "..") for segment in path.split("/"))


async def send_problem(send: Send, error: ShopError, request_id: bytes) -> None:
    """Answer with ``error`` as problem+json, straight on the ASGI channel."""
    body = json.dumps(
        problem_body(error), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id),
        NOSNIFF,
        *(
            (name.lower().encode(), value.encode())
            for name, value in error.response_headers.items()
        ),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ProxyMiddleware:
    """Routes a request to its upstream, or hands it to the wrapped app."""

    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OWN_PATHS:
            await self._own(scope, receive, send)
            return
        path: str = scope["path"]
        if is_internal(path) or has_dot_segment(path):
            rid = request_id(_header(scope, b"x-request-id")).encode()
            await send_problem(send, NotFound("No resource at this path."), rid)
            return
        pool = self.gateway.route(path)
        if pool is None:
            await self._own(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._proxy(scope, receive, tracking_send, pool)
        except Exception:
            # This layer runs outside FastAPI's error middleware, so it renders its own 500.
            logger.exception("proxy error on %s %s", scope["method"], path)
            if started:
                raise
            rid = request_id(_header(scope, b"x-request-id")).encode()
            await send_problem(send, ShopError("An unexpected error occurred in the gateway."), rid)

    async def _own(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The wrapped app answers; the request id is echoed all the same."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(_header(scope, b"x-request-id")).encode()

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid)]}
            await send(message)

        await self.app(scope, receive, send_with_id)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, pool: ServicePool) -> None:
        # One pass over the caller's headers: keep what goes upstream, note what matters.
        forwarded: list[tuple[bytes, bytes]] = []
        incoming_id = incoming_trace = authorization = None
        host = forwarded_for = None
        hop_tokens: set[bytes] | None = None
        has_body = False
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name in DROPPED_REQUEST_HEADERS:
                if name == b"x-request-id":
                    incoming_id = value.decode("latin-1")
                elif name == b"traceparent":
                    incoming_trace = value.decode("latin-1")
                elif name == b"transfer-encoding":
                    has_body = True
                elif name == b"host":
                    host = value
                elif name == b"x-forwarded-for":
                    forwarded_for = value
                elif name == b"connection":
                    hop_tokens = connection_tokens(value)
                continue
            if name == b"authorization":
                if authorization is not None:
                    rid = request_id(incoming_id or _header(scope, b"x-request-id"))
                    await AMBIGUOUS_AUTHORIZATION.send(send, [(b"x-request-id", rid.encode())])
                    return
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                has_body = True
                declared = value
            forwarded.append((name, value))
        if hop_tokens:
            forwarded = [h for h in forwarded if h[0] not in hop_tokens]

        rid = request_id(incoming_id)
        rid_bytes = rid.encode()
        gateway = self.gateway
        body_limit = gateway.body_limit
        if declared is not None and body_limit.declared_too_large(declared):
            # Refused before the body is read and before any upstream is asked.
            await body_limit.refuse(send, [(b"x-request-id", rid_bytes)])
            return
        if authorization is not None:
            try:
                await gateway.auth.check(authorization)
            except ShopError as error:
                await send_problem(send, error, rid_bytes)
                return

        client_addr = scope.get("client")
        if client_addr:
            caller = str(client_addr[0]).encode()
            forwarded_for = forwarded_for + b", " + caller if forwarded_for else caller
            if gateway.edge_token is not None:
                # The address the services count sign-in failures under (per-address limits):
                # the connection's own peer, proved by the token they share with the gateway.
                forwarded.append((CLIENT_ADDRESS, caller))
                forwarded.append((EDGE_TOKEN, gateway.edge_token))
        forwarded.append((b"x-request-id", rid_bytes))
        forwarded.append((b"traceparent", traceparent(incoming_trace).encode()))
        if forwarded_for:
            forwarded.append((b"x-forwarded-for", forwarded_for))
        if host:
            forwarded.append((b"x-forwarded-host", host))
        forwarded.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))

        body: bytes | CallerBody | None = None
        if has_body:
            # The first chunk is usually the whole body: send it as bytes when it is, and
            # stream the rest from the caller as the upstream takes it otherwise.
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            first: bytes = message.get("body", b"")
            if declared is None and len(first) > body_limit.limit:
                await body_limit.refuse(send, [(b"x-request-id", rid_bytes)])
                return
            if message.get("more_body", False):
                body = CallerBody(receive, first, limit=body_limit.limit)
            else:
                body = first

        raw_path: bytes | None = scope.get("raw_path")
        target = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        query: bytes = scope.get("query_string", b"")
        if query:
            target = f"{target}?{query.decode('latin-1')}"

        try:
            response, replica = await pool.send(
                gateway.client, scope["method"], target, forwarded, body
            )
        except ShopError as error:
            await send_problem(send, error, rid_bytes)
            return
        except CallerDisconnected:
            return
        except CallerBodyTooLarge:
            await body_limit.refuse(send, [(b"x-request-id", rid_bytes)])
            return
        if isinstance(body, CallerBody) and body.too_large:
            # The upstream answered before the upload failed (an in-process upstream
            # renders the failed read as its own error): the caller is told what happened.
            await response.aclose()
            await body_limit.refuse(send, [(b"x-request-id", rid_bytes)])
            return
        try:
            headers = [h for h in response.headers if h[0] not in DROPPED_RESPONSE_HEADERS]
            headers.append((b"x-request-id", rid_bytes))
            headers.append(NOSNIFF)
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            while True:
                chunk = await response.read_chunk()
                more = not response.at_eof
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    break
        except (UpstreamReadTimeout, UpstreamBroken) as exc:
            # Too late for a problem document: the status line is gone. Returning without
            # completing the response makes the server drop the connection, which is how
            # HTTP tells the caller the body is truncated.
            replica.breaker.failure()
            logger.warning("%s %s: upstream failed mid-body: %s", scope["method"], target, exc)
        finally:
            await response.aclose()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
