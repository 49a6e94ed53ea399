"""The monolith as a real process: the whole contract suite over TCP, and seeding it."""

from __future__ import annotations

import functools
import subprocess
import sys

import httpx2
import pytest

from loadtests.seed import SeedPlan, is_seeded, seed
from tests import support
from tests.system.conftest import REPO, LiveServer

pytestmark = pytest.mark.anyio


def test_contract_suite_passes_against_the_running_monolith(live_monolith: LiveServer) -> None:
    result = subprocess.run(  # noqa: S603 (our own interpreter running our own suite)
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/contract",
            "-q",
            "-p",
            "no:cacheprovider",
            "--base-url",
            live_monolith.base_url,
            "--admin-email",
            support.ADMIN_EMAIL,
            "--admin-password",
            support.ADMIN_PASSWORD,
            "--signing-key-file",
            str(live_monolith.key_file),
            "--issuer",
            support.ISSUER,
            "--audience",
            support.AUDIENCE,
            "--payment-delay",
            str(support.PAYMENT_DELAY_SECONDS),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in summary, summary
    assert "failed" not in summary, summary


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
