"""Request bodies are capped (1 MiB by default) before anything reads them whole.

Before the cap an anonymous ``POST /auth/register`` of 75 MB was read, buffered and parsed
in full (about 2 GB of memory for one request). Now a declared ``Content-Length`` over the
cap is refused with 413 before a byte of the body is read, and a chunked body is cut off as
soon as it passes the cap. Both shapes: the monolith, and the services behind the gateway.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.contract.helpers import Target, assert_problem, expect, unique_email

pytestmark = pytest.mark.anyio

LIMIT = 1024 * 1024
CHUNK = 64 * 1024


class Trickle:
    """A request body of ``total`` bytes produced lazily, counting what was pulled."""

    def __init__(self, total: int, *, first: bytes = b"") -> None:
        self.total = total
        self.first = first
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        if self.first:
            self.pulled += len(self.first)
            sent += len(self.first)
            yield self.first
        while sent < self.total:
            piece = b" " * min(CHUNK, self.total - sent)
            self.pulled += len(piece)
            sent += len(piece)
            yield piece


def registration(padding: int) -> bytes:
    """A valid registration document followed by ``padding`` spaces (still valid JSON)."""
    body = json.dumps(
        {"email": unique_email("big"), "password": "correct horse battery", "name": "Big"}
    ).encode()
    return body + b" " * padding


async def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_read(
    client: httpx2.AsyncClient,
) -> None:
    declared = 75 * 1000 * 1000
    body = Trickle(declared, first=b'{"email": ')
    response = await client.post(
        "/auth/register",
        content=body,
        headers={"content-type": "application/json", "content-length": str(declared)},
    )
    problem = assert_problem(response, 413, "payload-too-large")
    assert str(LIMIT) in problem["detail"], problem
    # Nothing, or at most the first piece the transport hands over, was read.
    assert body.pulled <= CHUNK, body.pulled


async def test_a_chunked_body_is_cut_off_once_it_passes_the_cap(
    client: httpx2.AsyncClient,
) -> None:
    body = Trickle(75 * 1000 * 1000, first=b'{"email": ')
    response = await client.post(
        "/auth/register", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")
    # Read up to the cap and a piece or two beyond it, never the 75 MB.
    assert body.pulled <= LIMIT + 2 * CHUNK, body.pulled


async def test_a_whole_body_over_the_cap_is_refused(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/auth/register",
        content=registration(LIMIT),
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413, "payload-too-large")


async def test_the_cap_applies_where_no_route_reads_the_body(client: httpx2.AsyncClient) -> None:
    # An unknown path and a method the path does not allow: still 413, and problem+json.
    for method, path in (("POST", "/no-such-thing"), ("PATCH", "/auth/register")):
        response = await client.request(
            method, path, content=b"x" * (LIMIT + 1), headers={"content-type": "text/plain"}
        )
        assert_problem(response, 413, "payload-too-large")


async def test_a_body_under_the_cap_is_served(shop: Target, client: httpx2.AsyncClient) -> None:
    content = registration(LIMIT - 400)
    assert len(content) <= LIMIT
    response = await client.post(
        "/auth/register", content=content, headers={"content-type": "application/json"}
    )
    expect(response, 201)
    # And streamed in pieces, without a length.
    chunked = await client.post(
        "/auth/register",
        content=Trickle(LIMIT - 400 - 200, first=registration(0)),
        headers={"content-type": "application/json"},
    )
    expect(chunked, 201)


async def test_a_form_body_is_capped_too(client: httpx2.AsyncClient) -> None:
    # POST /auth/token reads an OAuth2 form, not JSON: the cap holds for the form parser too.
    body = Trickle(75 * 1000 * 1000, first=b"grant_type=password&username=a%40b.c&password=")
    response = await client.post(
        "/auth/token",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 413, "payload-too-large")
    assert body.pulled <= LIMIT + 2 * CHUNK, body.pulled
