"""Typed errors rendered as RFC 9457 ``application/problem+json`` in one place.

Contexts raise subclasses of :class:`ShopError`; services never raise ``HTTPException``.
Every app (the monolith, each service, the gateway) calls :func:`install_error_handlers`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

PROBLEM_CONTENT_TYPE = "application/problem+json"
logger = logging.getLogger("shop.errors")


def problem_type(slug: str) -> str:
    """The stable ``type`` URI reference of a problem slug."""
    return f"/problems/{slug}"


class ShopError(Exception):
    """Base of every domain and API error; subclasses set the class attributes."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.response_headers: Mapping[str, str] = {**self.headers, **(headers or {})}
        """The class's headers plus this error's own (a ``Retry-After`` in seconds, say)."""


class BadRequest(ShopError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class Unauthorized(ShopError):
    status = 401
    slug = "unauthorized"
    title = "Unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ShopError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(ShopError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(ShopError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class Unprocessable(ShopError):
    status = 422
    slug = "unprocessable"
    title = "Unprocessable request"


class TooManyRequests(ShopError):
    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


class ServiceUnavailable(ShopError):
    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error body of the API."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


def problem_body(error: ShopError) -> dict[str, Any]:
    """The problem+json document of ``error``."""
    return {
        "type": problem_type(error.slug),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        **error.extra,
    }


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def _jsonable_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        out.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


async def _shop_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ShopError)
    return JSONResponse(
        problem_body(exc),
        status_code=exc.status,
        headers=dict(exc.response_headers) or None,
        media_type=PROBLEM_CONTENT_TYPE,
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _jsonable_errors(exc.errors())
    where = ", ".join(".".join(e["loc"]) + ": " + e["msg"] for e in errors[:3])
    return problem_response(
        422,
        "validation-error",
        "Invalid request",
        f"The request is not valid: {where}" if where else "The request is not valid.",
        errors=errors,
    )


def _allowed_methods(request: Request) -> str:
    """Every method the API documents at this path (Starlette names only one route's)."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            methods = {method.upper() for method in operations if method != "parameters"}
            table.append((compile_path(template)[0], methods))
        request.app.state.allowed_methods = table
    path = request.url.path
    return ", ".join(sorted({m for pattern, ms in table if pattern.match(path) for m in ms}))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else title
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No resource at this path."
    elif exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
        detail = f"{request.method} is not allowed here; use {headers['Allow']}."
    elif exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = "The request body could not be parsed."
    return problem_response(exc.status_code, slug, title, detail, headers=headers or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500, "internal-error", "Internal server error", "An unexpected error occurred."
    )


DATABASE_RETRY_AFTER_SECONDS = 1


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says no connection to the database could be had (refused, the
    server's connection limit, the pool's timeout), as opposed to a failing statement."""
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and (
        exc.statement is None or exc.connection_invalidated
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not database_unreachable(exc):
        return await _unexpected(request, exc)
    # An outage of a dependency, not a bug: one log line, a 503 the client may retry.
    logger.warning(
        "database unavailable on %s %s: %s", request.method, request.url.path, exc.__class__
    )
    return problem_response(
        503,
        "database-unavailable",
        "Database unavailable",
        "The database could not be reached; try again shortly.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as problem+json."""
    app.add_exception_handler(ShopError, _shop_error)
    app.add_exception_handler(sa_exc.SQLAlchemyError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json errors of a route.

    A route that validates input (422) can also meet a body it cannot parse (400).
    """
    if 422 in statuses and 400 not in statuses:
        statuses = (400, *statuses)
    descriptions = {
        400: "Bad request",
        401: "Missing or invalid access token",
        402: "Payment declined",
        403: "Not allowed for this role",
        404: "Not found",
        409: "Conflict with the current state",
        422: "Invalid request",
        429: "Too many requests; retry after Retry-After seconds",
        503: "Unavailable",
        504: "Upstream timeout",
    }
    return {
        status: {
            "description": descriptions.get(status, "Error"),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": Problem.model_json_schema()}},
        }
        for status in statuses
    }
