"""Smaller findings at the HTTP edge, each shown black-box against both shapes."""

from __future__ import annotations

import base64
import hashlib
import re

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


async def test_every_response_says_nosniff(client: httpx2.AsyncClient) -> None:
    responses = [
        await client.get("/healthz"),
        await client.get("/readyz"),
        await client.get("/products"),
        await client.get("/products/2147483647"),
        await client.get("/nowhere"),
        await client.post("/auth/register", json={}),
        await client.get("/openapi.json"),
        await client.get("/docs"),
        await client.post("/auth/register", content=b"x" * (2 << 20)),
        await client.get("/products", headers=[("authorization", "a"), ("authorization", "b")]),
    ]
    for response in responses:
        assert response.headers.get("x-content-type-options") == "nosniff", (
            response.request.url,
            response.status_code,
            dict(response.headers),
        )


def _directives(policy: str) -> dict[str, list[str]]:
    out = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


@pytest.mark.parametrize("path", ["/docs", "/docs/oauth2-redirect", "/redoc"])
async def test_html_pages_carry_a_strict_content_security_policy(
    client: httpx2.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    if response.status_code == 404:
        return  # not served at all in this shape: nothing to protect
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers.get("content-security-policy")
    assert policy, dict(response.headers)
    rules = _directives(policy)
    assert rules["default-src"] == ["'none'"], policy
    assert rules["frame-ancestors"] == ["'none'"], policy
    assert rules["base-uri"] == ["'none'"], policy
    scripts = rules.get("script-src", [])
    assert "'unsafe-inline'" not in scripts, policy
    assert "'unsafe-eval'" not in scripts, policy
    assert not any(source.endswith(("*", "/")) or source == "https:" for source in scripts), policy
    html = response.text
    # Every script the page loads is allowed by its exact URL, every inline one by its hash.
    for src in re.findall(r'<script[^>]*\bsrc="([^"]+)"', html):
        assert src in scripts, (src, policy)
    for body in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in scripts, policy
