"""Finding 3: a sign-in flood and password guessing.

- Failed sign-ins are counted per account and per client address; past the limit (5 per
  account, 30 per address, within 15 minutes) each further failure locks the account or the
  address for a back-off that doubles, answered ``429 too-many-sign-in-attempts`` with
  ``Retry-After``, the right password included (no oracle).
- Successes never count: a legitimate user signs in while another account is attacked, and
  one user may sign in any number of times (the load tests do).
- Behind the gateway the address is the gateway's caller, which the gateway vouches for: a
  client cannot pick the address it is counted under (``X-Forwarded-For``,
  ``X-Shop-Client-Address``).
- Password hashing is bounded per process: past the slots and a short wait, ``503
  sign-in-busy`` with ``Retry-After``, never an unbounded queue.

Every test takes ``shop``: the monolith and the services behind the gateway.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from tests import targets
from tests.contract.helpers import (
    Target,
    User,
    assert_problem,
    expect,
    gather,
    new_customer,
    request_token,
    unique_email,
)

pytestmark = pytest.mark.anyio

ACCOUNT_LIMIT = 5
ADDRESS_LIMIT = 30


@asynccontextmanager
async def from_address(shop: Target, address: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of ``shop`` whose connections come from ``address``."""
    assert isinstance(shop.transport, httpx2.ASGITransport)
    transport = httpx2.ASGITransport(app=shop.transport.app, client=(address, 40_000))
    async with httpx2.AsyncClient(
        transport=transport, base_url=shop.base_url, timeout=30
    ) as client:
        yield client


def fresh_address() -> str:
    """A documentation address (RFC 5737) no other test uses."""
    n = uuid.uuid4().int
    return f"198.51.{n % 256}.{(n >> 8) % 254 + 1}"


def assert_wrong(resp: httpx2.Response) -> None:
    assert_problem(resp, 401, "unauthorized")


def assert_throttled(resp: httpx2.Response) -> int:
    problem = assert_problem(resp, 429, "too-many-sign-in-attempts")
    retry_after = int(resp.headers["retry-after"])
    assert retry_after >= 1, resp.headers
    assert problem["retry_after"] == retry_after
    return retry_after


async def test_failed_sign_ins_on_an_account_back_off_and_lock_even_the_right_password(
    shop: Target, client: httpx2.AsyncClient
) -> None:
    victim = await new_customer(client, "victim")
    async with from_address(shop, fresh_address()) as attacker:
        for _ in range(ACCOUNT_LIMIT):
            assert_wrong(await request_token(attacker, victim.email, "guess-wrong"))
        # The failure past the limit is still answered, and locks the account.
        assert_wrong(await request_token(attacker, victim.email, "guess-wrong"))
        first = assert_throttled(await request_token(attacker, victim.email, "guess-wrong"))
        # The right password is refused too while locked: no oracle.
        assert_throttled(await request_token(attacker, victim.email, victim.password))
        # From another address as well: the account is what is locked.
        async with from_address(shop, fresh_address()) as elsewhere:
            assert_throttled(await request_token(elsewhere, victim.email, victim.password))

        # Once the lock ends, the next failure locks it for twice as long.
        await until_unlocked_then_fail(attacker, victim)
        second = assert_throttled(await request_token(attacker, victim.email, "guess-wrong"))
        assert second > first, (first, second)


async def until_unlocked_then_fail(client: httpx2.AsyncClient, victim: User) -> None:
    """Wait (bounded) for the account's lock to end, then fail once more."""
    deadline = time.monotonic() + 10
    while True:
        resp = await request_token(client, victim.email, "guess-wrong")
        if resp.status_code == 401:
            return
        assert_throttled(resp)
        assert time.monotonic() < deadline, "the lock never ended"
        await anyio.sleep(0.1)


async def test_a_legitimate_user_signs_in_while_another_account_is_attacked(
    shop: Target, client: httpx2.AsyncClient
) -> None:
    victim = await new_customer(client, "victim")
    bystander = await new_customer(client, "bystander")
    address = fresh_address()
    async with from_address(shop, address) as attacker:
        for _ in range(ACCOUNT_LIMIT + 1):
            assert_wrong(await request_token(attacker, victim.email, "guess-wrong"))
        assert_throttled(await request_token(attacker, victim.email, "guess-wrong"))
        # The same address (a shared NAT, say) is still below its own limit.
        expect(await request_token(attacker, bystander.email, bystander.password), 200)
    async with from_address(shop, fresh_address()) as legitimate:
        expect(await request_token(legitimate, bystander.email, bystander.password), 200)


async def test_an_address_trying_many_accounts_is_throttled_whatever_it_claims(
    shop: Target, client: httpx2.AsyncClient
) -> None:
    """One failure per account keeps every account below its limit; the address is not.
    Every attempt claims another address, in every header a client could try."""
    user = await new_customer(client, "user")

    def spoofed() -> dict[str, str]:
        other = fresh_address()
        return {
            "X-Forwarded-For": other,
            "X-Real-IP": other,
            "Forwarded": f"for={other}",
            "X-Shop-Client-Address": other,
            "X-Shop-Edge-Token": targets.EDGE_TOKEN,  # even the real secret, from outside
        }

    async with from_address(shop, fresh_address()) as attacker:
        statuses = []
        for _ in range(ADDRESS_LIMIT + 1):
            resp = await attacker.post(
                "/auth/token",
                data={"username": unique_email("nobody"), "password": "guess-wrong"},
                headers=spoofed(),
            )
            statuses.append(resp.status_code)
        assert statuses == [401] * (ADDRESS_LIMIT + 1)
        resp = await attacker.post(
            "/auth/token",
            data={"username": user.email, "password": user.password},
            headers=spoofed(),
        )
        assert_throttled(resp)
    async with from_address(shop, fresh_address()) as elsewhere:
        expect(await request_token(elsewhere, user.email, user.password), 200)


async def test_successful_sign_ins_are_never_throttled(
    shop: Target, client: httpx2.AsyncClient
) -> None:
    user = await new_customer(client, "regular")
    async with from_address(shop, fresh_address()) as same:
        for _ in range(ADDRESS_LIMIT + ACCOUNT_LIMIT + 5):
            expect(await request_token(same, user.email, user.password), 200)


# --------------------------------------------------------------------------- hashing flood

SLOW_HASHING: dict[str, Any] = {
    # ~50-100 ms per hash, one at a time, no waiting: a burst must overflow.
    "argon2_time_cost": 2,
    "argon2_memory_kib": 32_768,
    "argon2_parallelism": 1,
    "max_concurrent_hashes": 1,
    "hash_wait_seconds": 0.0,
}


@pytest.mark.parametrize(
    "topology", ["topologies/kata-00-monolith.toml", "topologies/services.toml"]
)
async def test_a_sign_in_flood_gets_503_with_retry_after_not_a_queue(topology: str) -> None:
    async with targets.deployment(topology, identity_overrides=SLOW_HASHING) as raw:
        shop = Target.from_mapping(raw)
        async with httpx2.AsyncClient(
            transport=raw["transport"], base_url=shop.base_url, timeout=60
        ) as client:
            responses = await gather(
                request_token(client, shop.admin_email, shop.admin_password) for _ in range(8)
            )
            statuses = sorted(resp.status_code for resp in responses)
            assert set(statuses) <= {200, 503}, statuses
            assert 200 in statuses, statuses
            busy = [resp for resp in responses if resp.status_code == 503]
            assert busy, f"eight sign-ins at once on one hashing slot all queued: {statuses}"
            for resp in busy:
                assert_problem(resp, 503, "sign-in-busy")
                assert resp.headers["retry-after"] == "1"
            # Busy is not a failure: the admin is not locked out by it.
            expect(await request_token(client, shop.admin_email, shop.admin_password), 200)
