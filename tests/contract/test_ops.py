"""Operations endpoints and the generic HTTP errors (unknown route, wrong method)."""

from __future__ import annotations

import httpx2
import pytest

from tests.contract.helpers import assert_problem, expect, unique

pytestmark = pytest.mark.anyio


async def test_healthz_reports_ok(client: httpx2.AsyncClient) -> None:
    assert expect(await client.get("/healthz"), 200) == {"status": "ok"}


async def test_readyz_reports_ready_with_every_check_ok(client: httpx2.AsyncClient) -> None:
    # What is checked depends on the topology (a database; or each upstream behind a
    # gateway); that every check is "ok" when ready does not.
    body = expect(await client.get("/readyz"), 200)
    assert body["status"] == "ready"
    assert body["checks"], body
    assert set(body["checks"].values()) == {"ok"}, body


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_unknown_route_is_a_not_found_problem(
    client: httpx2.AsyncClient, method: str
) -> None:
    resp = await client.request(method, f"/no-such-route-{unique()}")
    assert_problem(resp, 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/healthz", "GET"),
        ("DELETE", "/categories", "POST"),
        ("PATCH", "/cart", "DELETE"),
        ("PUT", "/orders", "POST"),
        ("GET", "/auth/token", "POST"),
        ("DELETE", "/users/me", "GET"),
    ],
)
async def test_wrong_method_on_known_path_is_method_not_allowed(
    client: httpx2.AsyncClient, method: str, path: str, allowed: str
) -> None:
    resp = await client.request(method, path)
    assert_problem(resp, 405, "method-not-allowed")
    # RFC 9110: a 405 names the methods the resource does support
    allow = {m.strip().upper() for m in resp.headers.get("allow", "").split(",")}
    assert allowed in allow, resp.headers
    assert method not in allow, resp.headers
