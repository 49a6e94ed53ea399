"""One API whatever the topology: the gateway's merged OpenAPI document is the monolith's."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from monolith.app import create_app
from tests import support, targets

pytestmark = pytest.mark.anyio


async def test_the_gateway_serves_exactly_the_monolith_openapi_document(tmp_path: Path) -> None:
    monolith = create_app(support.monolith_settings(f"sqlite+aiosqlite:///{tmp_path}/m.db"))
    expected = monolith.openapi()
    async with (
        targets.services() as target,
        httpx2.AsyncClient(transport=target["transport"], base_url=target["base_url"]) as client,
    ):
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    merged = response.json()
    # Compare piece by piece first, so that a failure names what differs.
    assert set(merged["paths"]) == set(expected["paths"])
    for path, operations in expected["paths"].items():
        assert merged["paths"][path] == operations, path
    assert merged["components"] == expected["components"]
    assert merged == expected
    # No internal route leaks into the public document.
    assert not [path for path in merged["paths"] if path.startswith("/internal")]
