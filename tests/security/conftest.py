"""Fixtures of the security tier: each finding is shown black-box, against both shapes.

Every test that takes ``shop`` runs twice: against the modular monolith and against the
services behind the gateway, both built in process (ASGI transports, no sockets), each on its
own scratch database (SQLite, or PostgreSQL with ``TEST_DATABASE_URL``). Findings that only a
real socket can show (a slow body, a connection flood) start real processes instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from tests import targets
from tests.contract.helpers import Target, User, client_for, sign_in_admin

SHAPES = ("monolith", "services")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=SHAPES)
async def shop(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """One deployment shape, built once per module (not per session: on PostgreSQL its
    connection pools would stay open beside the later tiers' topologies, and the server
    allows 100 connections in all)."""
    async with getattr(targets, request.param)() as raw:
        yield Target.from_mapping(raw)


@pytest.fixture
async def client(shop: Target) -> AsyncIterator[httpx2.AsyncClient]:
    async with client_for(shop) as http:
        yield http


@pytest.fixture
async def admin(shop: Target, client: httpx2.AsyncClient) -> User:
    return await sign_in_admin(client, shop)
