"""One request id (and trace) from the caller through the gateway to a service that calls
another service: forwarded by every hop, echoed to the caller, in every log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI, Request

from shop.kernel import correlation
from shop.kernel.correlation import RequestIdFilter
from shop.kernel.edge import EdgeMiddleware
from shop.kernel.errors import install_error_handlers
from shop.kernel.http import Upstream, expect
from tests.gateway.support import asgi, build, gateway_client, write_topology

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _inventory() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(EdgeMiddleware)

    @app.get("/levels")
    async def levels(request: Request) -> dict[str, Any]:
        logging.getLogger("tests.inventory").warning("inventory counts")
        return {"headers": [[k.decode(), v.decode()] for k, v in request.headers.raw]}

    return app


def _catalog(inventory: FastAPI) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(EdgeMiddleware)
    upstream = Upstream(
        "inventory", ["http://inventory"], transport=httpx2.ASGITransport(app=inventory)
    )

    @app.get("/products/{product_id}")
    async def product(product_id: int, request: Request) -> dict[str, Any]:
        logging.getLogger("tests.catalog").warning("catalog asks inventory")
        levels = expect(await upstream.request("GET", "/levels", idempotent=True), 200)
        return {
            "catalog": [[k.decode(), v.decode()] for k, v in request.headers.raw],
            "inventory": levels["headers"],
        }

    return app


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """Every record written while the test runs, through a handler with the filter on."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


def _values(pairs: list[list[str]], name: str) -> list[str]:
    return [value for key, value in pairs if key == name]


@pytest.mark.parametrize("given", ["checkout-42", None, "not a sane id"])
async def test_the_request_id_goes_from_the_caller_to_the_last_service_and_into_every_log(
    tmp_path: Path, logged: list[logging.LogRecord], given: str | None
) -> None:
    inventory = _inventory()
    catalog = _catalog(inventory)
    app = build(write_topology(tmp_path, {"/products": "catalog"}), {"catalog": asgi(catalog)})
    headers = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    if given is not None:
        headers["X-Request-ID"] = given
    async with gateway_client(app) as client:
        response = await client.get("/products/1", headers=headers)
    assert response.status_code == 200, response.text
    rid = response.headers["x-request-id"]
    if given == "checkout-42":
        assert rid == given
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
    hops = response.json()
    assert _values(hops["catalog"], "x-request-id") == [rid]
    assert _values(hops["inventory"], "x-request-id") == [rid]
    # The gateway is a hop of the trace (a new parent span); a service passes it on as is.
    [at_catalog] = _values(hops["catalog"], "traceparent")
    assert re.fullmatch(rf"00-{TRACE}-[0-9a-f]{{16}}-01", at_catalog)
    assert not at_catalog.startswith(f"00-{TRACE}-00f067aa0ba902b7")
    assert _values(hops["inventory"], "traceparent") == [at_catalog]
    lines = {r.name: r for r in logged if r.name.startswith("tests.")}
    assert set(lines) == {"tests.catalog", "tests.inventory"}
    assert {getattr(r, "request_id", None) for r in lines.values()} == {rid}
    # Once answered, no request is being handled any more.
    assert correlation.current() is None


async def test_a_failing_call_is_logged_under_the_request_id(
    tmp_path: Path, logged: list[logging.LogRecord]
) -> None:
    app = build(write_topology(tmp_path, {"/products": "catalog"}), {"catalog": _Refused()})
    async with gateway_client(app) as client:
        response = await client.get("/products/1", headers={"X-Request-ID": "lost-1"})
    assert response.status_code == 503
    assert response.headers["x-request-id"] == "lost-1"
    failures = [r for r in logged if r.name == "shop.http"]
    assert failures
    assert {getattr(r, "request_id", None) for r in failures} == {"lost-1"}


class _Refused(httpx2.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)


async def test_calls_made_outside_a_request_carry_no_correlation() -> None:
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={})

    upstream = Upstream("x", ["http://x"], transport=httpx2.MockTransport(answer))
    await upstream.request("GET", "/y", idempotent=True)
    token = correlation.begin("inside-1", None)
    try:
        await upstream.request("GET", "/y", idempotent=True)
    finally:
        correlation.end(token)
    await upstream.aclose()
    assert "x-request-id" not in seen[0].headers
    assert seen[1].headers["x-request-id"] == "inside-1"
    assert "traceparent" not in seen[1].headers
