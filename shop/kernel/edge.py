"""What every app does at its HTTP edge, before any route runs: one pure ASGI layer.

The monolith, every service and the gateway install :class:`EdgeMiddleware` through
:func:`install_edge`; the gateway's proxy path, which runs in front of FastAPI, applies the
same :class:`BodyLimit` itself.

It is a plain ASGI class, not Starlette's ``BaseHTTPMiddleware``: that one costs a task and
a stream per request on paths the performance work made fast (docs/benchmarks.md).
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shop.kernel import correlation
from shop.kernel.correlation import REQUEST_ID, TRACEPARENT
from shop.kernel.errors import PROBLEM_CONTENT_TYPE, BadRequest, ShopError, problem_body
from shop.kernel.server import ServerLimits
from shop.kernel.settings import ShopSettings

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
NOSNIFF = (b"x-content-type-options", b"nosniff")
"""On every response: a browser must take the declared content type, never sniff one (a
JSON body must not be run as a script or rendered as HTML)."""


class EdgeSettings(ShopSettings):
    """The edge's limits, mixed into every deployable's settings under its own prefix
    (``MONOLITH_MAX_BODY_BYTES``, ``SERVICE_MAX_BODY_BYTES``, ``GATEWAY_MAX_BODY_BYTES``)."""

    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES,
        ge=1,
        description="Largest request body accepted; a larger one is refused with 413",
    )
    max_header_bytes: int = Field(
        ServerLimits.max_header_bytes,
        ge=1024,
        description="Largest request line and headers together; larger is refused with 431",
    )
    header_timeout_seconds: float = Field(
        ServerLimits.header_timeout_seconds,
        gt=0,
        description="Time a client has to send a request head (408 and closed after it)",
    )
    body_timeout_seconds: float = Field(
        ServerLimits.body_timeout_seconds,
        gt=0,
        description="Time a client has to send a request body once its head is in",
    )
    max_connections_per_client: int = Field(
        ServerLimits.max_connections_per_client,
        ge=0,
        description="Open connections one client address may hold per server process "
        "(0: no cap; the services are behind the gateway, one address)",
    )

    def server_limits(self) -> ServerLimits:
        """What the server process (:func:`shop.kernel.process.serve`) allows a client."""
        return ServerLimits(
            max_header_bytes=self.max_header_bytes,
            header_timeout_seconds=self.header_timeout_seconds,
            body_timeout_seconds=self.body_timeout_seconds,
            max_connections_per_client=self.max_connections_per_client,
        )


class BodyTooLarge(HTTPException):
    """A request body passed the cap while it was being read (413).

    An ``HTTPException``, so FastAPI's body reading lets it through (it turns any other
    error of a body read into a 400) and the app's handler renders it as problem+json.
    ``Connection: close``: the rest of the body is not worth reading.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=too_large_detail(limit), headers={"Connection": "close"})


def too_large_detail(limit: int) -> str:
    """The ``detail`` of every 413 about a body larger than ``limit`` bytes."""
    return f"The request body is larger than {limit} bytes, the most this API accepts."


class StaticProblem:
    """A problem+json answer rendered once, sent straight on the ASGI channel."""

    __slots__ = ("_body", "_headers", "status")

    def __init__(self, error: ShopError) -> None:
        self.status = error.status
        self._body = json.dumps(
            problem_body(error), ensure_ascii=False, separators=(",", ":")
        ).encode()
        self._headers = [
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(self._body)).encode()),
            NOSNIFF,
            *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
        ]

    async def send(self, send: Send, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer with the problem, plus ``headers``; the request's body is not read."""
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [*self._headers, *(headers or ())],
            }
        )
        await send({"type": "http.response.body", "body": self._body})


class PayloadTooLarge(ShopError):
    """The 413 of a request body over the cap, answered before the body is read.

    ``Connection: close``: uvicorn then closes the connection after the answer instead of
    draining a body nobody will read.
    """

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"
    headers = {"Connection": "close"}


class AmbiguousAuthorization(BadRequest):
    """More than one ``Authorization`` header: which one would count is not for us to guess
    (the gateway checked the last while the services read the first)."""


AMBIGUOUS_AUTHORIZATION = StaticProblem(
    AmbiguousAuthorization("The request carries more than one Authorization header; send one.")
)


class BodyLimit:
    """The cap on request bodies, and its 413 answer rendered once."""

    __slots__ = ("_problem", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._problem = StaticProblem(PayloadTooLarge(too_large_detail(limit)))

    def declared_too_large(self, content_length: bytes) -> bool:
        """Whether a ``Content-Length`` value announces a body over the cap."""
        try:
            return int(content_length) > self.limit
        except ValueError:
            # Not a number: the server's parser refuses such a request before any app runs.
            return False

    async def refuse(self, send: Send, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer 413 problem+json without reading the body."""
        await self._problem.send(send, headers)

    def counting(self, receive: Receive) -> Receive:
        """``receive`` that raises :class:`BodyTooLarge` once the body passes the cap."""
        limit = self.limit
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited


class EdgeMiddleware:
    """What every request meets first.

    - Request bodies are capped: a declared length over the cap is answered 413 before the
      app runs; a body without a length (chunked) is counted as the app reads it and cut off
      with 413 once it passes the cap. A body with a length under the cap is not counted:
      the server's HTTP parser delivers no more than the length says.
    - Several ``Authorization`` headers are a 400.
    - The request's ``X-Request-ID`` (a new one when missing or not sane) and its valid
      ``traceparent`` (none when missing or invalid) are the request's correlation while
      the app handles it (:mod:`shop.kernel.correlation`: logs, outgoing calls).
    - Every response says ``X-Content-Type-Options: nosniff`` and ``X-Request-ID``.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.body_limit = BodyLimit(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        unsized = authorized = False
        incoming_id = incoming_trace = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if self.body_limit.declared_too_large(value):
                    await self.body_limit.refuse(send, [(REQUEST_ID, _id(incoming_id, scope))])
                    return
            elif name == b"transfer-encoding":
                unsized = True
            elif name == b"authorization":
                if authorized:
                    await AMBIGUOUS_AUTHORIZATION.send(send, [(REQUEST_ID, _id(None, scope))])
                    return
                authorized = True
            elif name == REQUEST_ID:
                incoming_id = value
            elif name == TRACEPARENT:
                incoming_trace = value
        if unsized:
            receive = self.body_limit.counting(receive)
        rid = correlation.request_id(incoming_id)
        echoed = ((REQUEST_ID, rid.encode()), NOSNIFF)

        async def send_with_edge_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new message: a response object may be sent again (the cached doc pages).
                message = {**message, "headers": [*message.get("headers", ()), *echoed]}
            await send(message)

        token = correlation.begin(rid, correlation.traceparent(incoming_trace))
        try:
            await self.app(scope, receive, send_with_edge_headers)
        finally:
            correlation.end(token)


def _id(incoming: bytes | None, scope: Scope) -> bytes:
    """The request id to echo on an answer given before the headers were all read."""
    if incoming is None:
        for name, value in scope["headers"]:
            if name == REQUEST_ID:
                incoming = value
                break
    return correlation.request_id(incoming).encode()


def install_edge(app: FastAPI, settings: EdgeSettings) -> None:
    """Put :class:`EdgeMiddleware` in front of ``app``'s routes, with ``settings``' limits."""
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes)
