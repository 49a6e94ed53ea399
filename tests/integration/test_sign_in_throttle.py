"""The sign-in throttle's failure store: one port, two bindings, the same behaviour.

The in-process binding runs everywhere; the Redis binding only where ``TEST_REDIS_URL``
names a server (marked ``redis``: ``make test`` needs no server). Each Redis test works under
a key prefix of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from shop.identity.exceptions import TooManySignIns
from shop.identity.throttle import (
    FailureStore,
    MemoryFailureStore,
    RedisFailureStore,
    SignInThrottle,
)
from tests.conftest import redis_url

pytestmark = pytest.mark.anyio


class Clock:
    """The in-process store's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _redis() -> RedisFailureStore:
    url = redis_url()
    assert url is not None, "the redis tests run only with TEST_REDIS_URL"
    store = RedisFailureStore.from_url(url)
    store._prefix = f"test:{uuid.uuid4().hex}:"  # every test on keys of its own
    return store


Later = Callable[[float], Awaitable[None]]


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FailureStore, Later]]:
    """A store, and how to let ``seconds`` pass for it (Redis expires keys in real time)."""
    clock = Clock()

    async def later(seconds: float) -> None:
        if request.param == "memory":
            clock.now += seconds
            return
        # Redis expires keys on its own clock, in real time: a known span, not a guess.
        await anyio.sleep(seconds)

    made: FailureStore = MemoryFailureStore(clock=clock) if request.param == "memory" else _redis()
    try:
        yield made, later
    finally:
        await made.aclose()


async def test_failures_count_per_key_and_are_forgotten_after_the_window(
    store: tuple[FailureStore, Later],
) -> None:
    failures, later = store
    assert await failures.add_failure("account:a", window_seconds=60) == 1
    assert await failures.add_failure("account:a", window_seconds=60) == 2
    assert await failures.add_failure("account:b", window_seconds=60) == 1
    assert await failures.add_failure("address:x", window_seconds=0.3) == 1
    await later(0.2)
    assert await failures.add_failure("address:x", window_seconds=0.3) == 2  # still counted
    await later(0.4)
    assert await failures.add_failure("address:x", window_seconds=0.3) == 1  # forgotten
    await failures.clear("account:a")
    assert await failures.add_failure("account:a", window_seconds=60) == 1


async def test_a_lock_lasts_its_time_and_is_never_shortened(
    store: tuple[FailureStore, Later],
) -> None:
    locks, later = store
    assert await locks.locked_for(["account:a", "address:x"]) == 0
    await locks.lock("account:a", seconds=30)
    await locks.lock("account:a", seconds=0.1)  # a shorter one keeps the longer
    assert 29 < await locks.locked_for(["address:x", "account:a"]) <= 30
    await locks.lock("address:x", seconds=0.2)
    assert 0 < await locks.locked_for(["address:x"]) <= 0.201
    await later(0.3)
    assert await locks.locked_for(["address:x"]) == 0
    await locks.clear("account:a")
    assert await locks.locked_for(["account:a"]) == 0


async def test_the_throttle_backs_off_past_the_limit_and_doubles(
    store: tuple[FailureStore, Later],
) -> None:
    failures, _ = store
    throttle = SignInThrottle(
        store=failures,
        account_limit=2,
        address_limit=100,
        window_seconds=60,
        base_delay_seconds=10,
        max_delay_seconds=25,
    )
    assert [throttle.delay(n, 2) for n in (1, 2, 3, 4, 5, 6)] == [0, 0, 10, 20, 25, 25]
    for _ in range(2):
        await throttle.check(email="a@x", address="192.0.2.1")
        await throttle.failed(email="a@x", address="192.0.2.1")
    await throttle.check(email="a@x", address="192.0.2.1")
    await throttle.failed(email="a@x", address="192.0.2.1")
    with pytest.raises(TooManySignIns) as locked:
        await throttle.check(email="a@x", address="192.0.2.99")
    assert locked.value.response_headers["Retry-After"] == "10"
    await throttle.check(email="b@x", address="192.0.2.1")  # another account: free


@pytest.mark.redis
async def test_replicas_share_their_counts_through_redis() -> None:
    first, second = _redis(), _redis()
    second._prefix = first._prefix
    try:
        one = SignInThrottle(first, 1, 100, 60, 5, 60)
        other = SignInThrottle(second, 1, 100, 60, 5, 60)
        await one.failed(email="a@x", address="192.0.2.1")
        await other.failed(email="a@x", address="192.0.2.2")
        with pytest.raises(TooManySignIns):
            await one.check(email="a@x", address="192.0.2.3")
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_unreachable_redis_leaves_sign_ins_unthrottled_not_impossible() -> None:
    # A port nothing listens on (the discard port): every call fails fast.
    store = RedisFailureStore.from_url("redis://127.0.0.1:9/0")
    throttle = SignInThrottle(store, 1, 1, 60, 5, 60)
    try:
        await throttle.failed(email="a@x", address="192.0.2.1")
        await throttle.failed(email="a@x", address="192.0.2.1")
        await throttle.check(email="a@x", address="192.0.2.1")
        await throttle.succeeded(email="a@x")
    finally:
        await store.aclose()
