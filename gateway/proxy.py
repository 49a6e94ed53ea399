"""The hot path: a pure ASGI layer that proxies every routed public path.

It runs in front of all of FastAPI (its middleware stack, routing and dependency
injection), which the measured FastAPI catch-all proxy paid for on every request
(docs/gateway.md). Paths the gateway answers itself (``/healthz``, ``/readyz``,
``/openapi.json``, ``/docs``) and paths no route claims fall through to the FastAPI app,
whose edge and handlers echo the request id and render problem+json.

This layer composes the others and adds no policy of its own: the route from
:mod:`gateway.routing`, the token check from :mod:`gateway.auth`, the call (breakers,
failover, failure kinds) from :mod:`gateway.upstreams` on the kernel's HTTP stack, the
header rules from :mod:`gateway.headers`. It is the edge of a proxied request: it takes the
request id and ``traceparent`` (:mod:`shop.kernel.correlation`) for the call to make.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.headers import DROPPED_REQUEST_HEADERS, DROPPED_RESPONSE_HEADERS, connection_tokens
from gateway.routing import OWN_PATHS, has_dot_segment, is_internal
from gateway.upstreams import CallerBody, CallerBodyTooLarge, CallerDisconnected
from shop.kernel import correlation
from shop.kernel.correlation import REQUEST_ID, TRACEPARENT
from shop.kernel.edge import AMBIGUOUS_AUTHORIZATION, NOSNIFF, BodyLimit
from shop.kernel.errors import PROBLEM_CONTENT_TYPE, NotFound, ShopError, problem_body
from shop.kernel.http import (
    CLIENT_ADDRESS_HEADER,
    EDGE_TOKEN_HEADER,
    CallFailure,
    StreamedResponse,
    Upstream,
)

logger = logging.getLogger("gateway.proxy")

CLIENT_ADDRESS = CLIENT_ADDRESS_HEADER.lower().encode("latin-1")
EDGE_TOKEN = EDGE_TOKEN_HEADER.lower().encode("latin-1")
CHUNKED = (b"transfer-encoding", b"chunked")


async def send_problem(send: Send, error: ShopError, request_id: bytes) -> None:
    """Answer with ``error`` as problem+json, straight on the ASGI channel."""
    body = json.dumps(
        problem_body(error), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID, request_id),
        NOSNIFF,
        *(
            (name.lower().encode(), value.encode())
            for name, value in error.response_headers.items()
        ),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Proxy:
    """Routes a request to its upstream, or hands it to the wrapped app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        route: Callable[[str], Upstream | None],
        check_token: Callable[[str], Awaitable[None]],
        body_limit: BodyLimit,
        edge_token: bytes | None,
    ) -> None:
        self.app = app
        self._route = route
        self._check_token = check_token
        self._body_limit = body_limit
        self._edge_token = edge_token
        """Sent with the caller's address to the services (``SHOP_EDGE_TOKEN``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OWN_PATHS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if is_internal(path) or has_dot_segment(path):
            rid = correlation.request_id(_header(scope, REQUEST_ID)).encode()
            await send_problem(send, NotFound("No resource at this path."), rid)
            return
        upstream = self._route(path)
        if upstream is None:
            await self.app(scope, receive, send)
            return
        await self._proxy(scope, receive, send, upstream)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, upstream: Upstream) -> None:
        # One pass over the caller's headers: keep what goes upstream, note what matters.
        forwarded: list[tuple[bytes, bytes]] = []
        incoming_id = incoming_trace = authorization = None
        host = forwarded_for = None
        hop_tokens: set[bytes] | None = None
        has_body = False
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name in DROPPED_REQUEST_HEADERS:
                if name == REQUEST_ID:
                    incoming_id = value
                elif name == TRACEPARENT:
                    incoming_trace = value
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
                    rid = correlation.request_id(incoming_id or _header(scope, REQUEST_ID))
                    await AMBIGUOUS_AUTHORIZATION.send(send, [(REQUEST_ID, rid.encode())])
                    return
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                has_body = True
                declared = value
            forwarded.append((name, value))
        if hop_tokens:
            forwarded = [h for h in forwarded if h[0] not in hop_tokens]

        # The gateway is a hop of the trace: its calls carry a new parent span id.
        rid = correlation.request_id(incoming_id)
        token = correlation.begin(
            rid, correlation.child_traceparent(correlation.traceparent(incoming_trace))
        )
        rid_bytes = rid.encode()
        started = False

        async def answer(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._forward(
                scope, receive, answer, upstream, forwarded, rid_bytes,
                authorization=authorization, host=host, forwarded_for=forwarded_for,
                has_body=has_body, declared=declared,
            )  # fmt: skip
        except Exception:
            # This layer runs outside FastAPI's error middleware, so it renders its own 500.
            logger.exception("proxy error on %s %s", scope["method"], scope["path"])
            if started:
                raise
            await send_problem(
                send, ShopError("An unexpected error occurred in the gateway."), rid_bytes
            )
        finally:
            correlation.end(token)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: Upstream,
        forwarded: list[tuple[bytes, bytes]],
        rid: bytes,
        *,
        authorization: str | None,
        host: bytes | None,
        forwarded_for: bytes | None,
        has_body: bool,
        declared: bytes | None,
    ) -> None:
        body_limit = self._body_limit
        if declared is not None and body_limit.declared_too_large(declared):
            # Refused before the body is read and before any upstream is asked.
            await body_limit.refuse(send, [(REQUEST_ID, rid)])
            return
        if authorization is not None:
            try:
                await self._check_token(authorization)
            except ShopError as error:
                await send_problem(send, error, rid)
                return

        client_addr = scope.get("client")
        if client_addr:
            caller = str(client_addr[0]).encode()
            forwarded_for = forwarded_for + b", " + caller if forwarded_for else caller
            if self._edge_token is not None:
                # The address the services count sign-in failures under (per-address limits):
                # the connection's own peer, proved by the token they share with the gateway.
                forwarded.append((CLIENT_ADDRESS, caller))
                forwarded.append((EDGE_TOKEN, self._edge_token))
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
                await body_limit.refuse(send, [(REQUEST_ID, rid)])
                return
            if message.get("more_body", False):
                body = CallerBody(receive, first, limit=body_limit.limit)
                if declared is None:
                    forwarded.append(CHUNKED)
            else:
                body = first
                if declared is None:
                    forwarded.append((b"content-length", str(len(first)).encode()))

        raw_path: bytes | None = scope.get("raw_path")
        target = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        query: bytes = scope.get("query_string", b"")
        if query:
            target = f"{target}?{query.decode('latin-1')}"

        try:
            response = await upstream.stream(scope["method"], target, forwarded, body)
        except ShopError as error:
            await send_problem(send, error, rid)
            return
        except CallerDisconnected:
            return
        except CallerBodyTooLarge:
            await body_limit.refuse(send, [(REQUEST_ID, rid)])
            return
        if isinstance(body, CallerBody) and body.too_large:
            # The upstream answered before the upload failed (an in-process upstream
            # renders the failed read as its own error): the caller is told what happened.
            await response.aclose()
            await body_limit.refuse(send, [(REQUEST_ID, rid)])
            return
        await _relay(send, response, rid, scope["method"], target)


async def _relay(
    send: Send, response: StreamedResponse, rid: bytes, method: str, target: str
) -> None:
    """The upstream's answer to the caller, chunk by chunk as it arrives."""
    try:
        headers = []
        for name, value in response.raw_headers:
            name = name.lower()
            if name not in DROPPED_RESPONSE_HEADERS:
                headers.append((name, value))
        headers.append((REQUEST_ID, rid))
        headers.append(NOSNIFF)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        while True:
            chunk = await response.read_chunk()
            more = not response.at_eof
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if not more:
                break
    except CallFailure as exc:
        # Too late for a problem document: the status line is gone. Returning without
        # completing the response makes the server drop the connection, which is how HTTP
        # tells the caller the body is truncated (the replica's circuit counted it).
        logger.warning("%s %s: upstream failed mid-body: %s", method, target, exc)
    finally:
        await response.aclose()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
