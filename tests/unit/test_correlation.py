"""The edge of every app: the request id and traceparent taken, kept, echoed and logged."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from uvicorn.logging import AccessFormatter

from shop.kernel import correlation
from shop.kernel.correlation import RequestIdFilter, log_config
from shop.kernel.edge import EdgeMiddleware

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID = f"00-{TRACE}-00f067aa0ba902b7-01"


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(EdgeMiddleware, max_body_bytes=16)

    @app.post("/seen")
    async def seen() -> dict[str, Any]:
        current = correlation.current()
        assert current is not None
        return {"request_id": current.request_id, "traceparent": current.traceparent}

    return app


async def _post(headers: dict[str, str], body: bytes = b"") -> httpx2.Response:
    transport = httpx2.ASGITransport(app=_app())
    async with httpx2.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.post("/seen", headers=headers, content=body)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("a b", False), ("", False)],
)
async def test_the_request_id_is_taken_when_sane_and_echoed(given: str, kept: bool) -> None:
    response = await _post({"X-Request-ID": given})
    rid = response.headers["x-request-id"]
    assert response.json()["request_id"] == rid
    assert (rid == given) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert correlation.current() is None


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (VALID, VALID),
        (f"cc-{TRACE}-00f067aa0ba902b7-09-future", f"00-{TRACE}-00f067aa0ba902b7-09"),
        (None, None),
        ("garbage", None),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"ff-{TRACE}-00f067aa0ba902b7-01", None),
        (f"{VALID}-extra", None),
    ],
)
async def test_a_valid_traceparent_is_kept_an_invalid_one_dropped_none_made(
    given: str | None, kept: str | None
) -> None:
    response = await _post({} if given is None else {"traceparent": given})
    assert response.json()["traceparent"] == kept
    assert "traceparent" not in response.headers


async def test_answers_given_at_the_edge_carry_the_request_id_too() -> None:
    too_large = await _post({"X-Request-ID": "big-1"}, b"x" * 17)
    assert too_large.status_code == 413
    assert too_large.headers["x-request-id"] == "big-1"


def test_every_log_line_names_the_request_access_log_included() -> None:
    config = log_config()
    access = AccessFormatter(fmt=config["formatters"]["access"]["fmt"], use_colors=False)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/products/1", "1.1", 200), None,
    )  # fmt: skip
    token = correlation.begin("line-1", None)
    try:
        RequestIdFilter().filter(record)
    finally:
        correlation.end(token)
    assert "[line-1]" in access.format(record)
    outside = logging.LogRecord("shop.http", logging.WARNING, __file__, 1, "m", None, None)
    RequestIdFilter().filter(outside)
    app = logging.Formatter(config["formatters"]["app"]["format"])
    assert app.format(outside) == "WARNING [-] shop.http: m"
