"""Smaller findings at the HTTP edge, each shown black-box against both shapes."""

from __future__ import annotations

import httpx2
import pytest

from tests.contract.helpers import assert_validation_error, expect

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
