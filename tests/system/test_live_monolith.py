"""The monolith as a real process: the whole contract suite over TCP, and seeding it."""

from __future__ import annotations

import functools

import httpx2
import pytest

from loadtests.seed import SeedPlan, is_seeded, seed
from tests import support
from tests.system.conftest import LiveServer, assert_contract_suite_passes

pytestmark = pytest.mark.anyio


def test_contract_suite_passes_against_the_running_monolith(live_monolith: LiveServer) -> None:
    assert_contract_suite_passes(live_monolith.base_url, live_monolith.key_file)


async def test_seed_over_http_is_deterministic_and_rerunnable(live_monolith: LiveServer) -> None:
    plan = SeedPlan(categories=3, products=12, stock=50)
    messages: list[str] = []
    async with httpx2.AsyncClient(base_url=live_monolith.base_url, timeout=30) as client:
        run_seed = functools.partial(
            seed,
            client,
            admin_email=support.ADMIN_EMAIL,
            admin_password=support.ADMIN_PASSWORD,
            plan=plan,
            progress=messages.append,
        )
        await run_seed()
        assert await is_seeded(client, plan)
        first = (await client.get("/products", params={"sku": "SEED-00012"})).json()["items"][0]
        # A second run finds everything and changes nothing but the stock level.
        await run_seed()
        again = (await client.get("/products", params={"sku": "SEED-00012"})).json()["items"]
        assert again == [first]
        detail = (await client.get(f"/products/{first['id']}")).json()
        stock = (await client.get(f"/inventory/{first['id']}")).json()
    assert detail["available"] == 50
    assert stock == {"product_id": first["id"], "on_hand": 50, "reserved": 0, "available": 50}
    assert first["name"].endswith("#12")
    assert any("12/12 products stocked" in message for message in messages), messages
