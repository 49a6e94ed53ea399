"""Smaller findings at the HTTP edge, each shown black-box against both shapes."""

from __future__ import annotations

import httpx2
import pytest

from tests.contract.helpers import User, assert_problem, assert_validation_error, expect

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "term",
    ["tea\x00pot", "\x00", "tea\x1bpot", "tea\x7fpot"],
    ids=["nul-inside", "nul-alone", "escape", "delete"],
)
async def test_a_search_term_with_control_characters_is_a_422(
    client: httpx2.AsyncClient, term: str
) -> None:
    # PostgreSQL text cannot hold NUL: passed to the query it was a 500.
    response = await client.get("/products", params={"q": term})
    data = assert_validation_error(response)
    assert data["errors"][0]["loc"] == ["query", "q"], data


async def test_an_ordinary_search_term_still_searches(client: httpx2.AsyncClient) -> None:
    for term in ("tea pot", "100%", "a_b", "über", "line\ttab"):
        expect(await client.get("/products", params={"q": term}), 200)


async def test_several_authorization_headers_are_a_400(
    client: httpx2.AsyncClient, admin: User
) -> None:
    # Which one counts differed: the gateway checked the last, the services read the first.
    own = {"Authorization": f"Bearer {admin.token}"}
    for pair in (
        [f"Bearer {admin.token}", "Bearer not-a-token"],
        ["Bearer not-a-token", f"Bearer {admin.token}"],
        [f"Bearer {admin.token}", f"Bearer {admin.token}"],
    ):
        headers = [("authorization", value) for value in pair]
        for method, path in (("GET", "/users/me"), ("GET", "/products"), ("GET", "/nowhere")):
            response = await client.request(method, path, headers=headers)
            problem = assert_problem(response, 400, "bad-request")
            assert "Authorization" in problem["detail"], problem
    expect(await client.get("/users/me", headers=own), 200)


SERVICE_NAMES = ("identity", "catalog", "inventory", "cart", "orders", "payments", "monolith")


async def test_public_readiness_names_no_internal_service(client: httpx2.AsyncClient) -> None:
    # Behind the gateway /readyz listed every service by name, and a down one with the
    # exception class that felled the check.
    response = await client.get("/readyz")
    body = expect(response, 200)
    assert body["status"] == "ready"
    assert all(value == "ok" for value in body["checks"].values()), body
    assert not any(name in response.text for name in SERVICE_NAMES), body
