"""Failed sign-ins, counted per account and per client address, with a growing back-off.

The counts live behind a small port, :class:`FailureStore`, with two bindings chosen by
``IDENTITY_THROTTLE_REDIS_URL``: :class:`MemoryFailureStore` (this process; the default,
whichever deployable serves identity) and :class:`RedisFailureStore` (shared by every
replica of identity, through the ``redis`` package's asyncio client). Only failures count:
a user who signs in with the right password is never slowed down, however often (the load
tests sign in once per simulated user).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shop.identity.exceptions import TooManySignIns
from shop.identity.settings import IdentitySettings

if TYPE_CHECKING:
    import redis.asyncio

logger = logging.getLogger("shop.identity.throttle")


class FailureStore(Protocol):
    """Counters of failures and back-off locks, each under a key, each expiring by itself."""

    async def add_failure(self, key: str, *, window_seconds: float) -> int:
        """Count one failure under ``key``; the count is forgotten ``window_seconds`` after
        the last failure. Returns the new count."""
        ...

    async def lock(self, key: str, *, seconds: float) -> None:
        """Refuse ``key`` for ``seconds`` (from now; never shortens a longer lock)."""
        ...

    async def locked_for(self, keys: Sequence[str]) -> float:
        """Seconds until the longest lock among ``keys`` ends (0 when none is locked)."""
        ...

    async def clear(self, key: str) -> None:
        """Forget the failures and the lock of ``key``."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections."""
        ...


class MemoryFailureStore:
    """The failure store of one process: dictionaries with expiry, bounded in size.

    Every key is an account or an address someone failed to sign in with, so an attacker
    chooses how many there are: beyond ``max_keys`` the expired entries go first, then the
    oldest.
    """

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (count, forgotten at)
        self._locks: dict[str, float] = {}  # key -> locked until
        self._max_keys = max_keys
        self._clock = clock

    async def add_failure(self, key: str, *, window_seconds: float) -> int:
        now = self._clock()
        count, forgotten_at = self._counts.pop(key, (0, now))
        if forgotten_at <= now:
            count = 0
        if len(self._counts) >= self._max_keys:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            while len(self._counts) >= self._max_keys:
                del self._counts[next(iter(self._counts))]  # dicts keep insertion order
        self._counts[key] = (count + 1, now + window_seconds)
        return count + 1

    async def lock(self, key: str, *, seconds: float) -> None:
        now = self._clock()
        until = max(self._locks.pop(key, now), now + seconds)
        if len(self._locks) >= self._max_keys:
            self._locks = {k: v for k, v in self._locks.items() if v > now}
            while len(self._locks) >= self._max_keys:
                del self._locks[next(iter(self._locks))]
        self._locks[key] = until

    async def locked_for(self, keys: Sequence[str]) -> float:
        now = self._clock()
        return max(0.0, *(self._locks.get(key, now) - now for key in keys))

    async def clear(self, key: str) -> None:
        self._counts.pop(key, None)
        self._locks.pop(key, None)

    async def aclose(self) -> None:
        return None


class RedisFailureStore:
    """The failure store shared by replicas: one Redis counter and one lock key per key.

    A counter is ``INCR`` plus ``PEXPIRE`` in one transaction; a lock is a key whose TTL is
    what is left of it (``SET NX PX`` makes it, ``PEXPIRE GT`` only ever lengthens it: Redis
    7 or later). Keys are prefixed ``shop:identity:signin:``.
    """

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "shop:identity:signin:"):
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str) -> RedisFailureStore:
        import redis.asyncio  # only where Redis is configured

        # Short timeouts: a sign-in must not hang on a slow store (it is then not throttled).
        client = redis.asyncio.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        return cls(client)

    def _count_key(self, key: str) -> str:
        return f"{self._prefix}n:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}lock:{key}"

    async def add_failure(self, key: str, *, window_seconds: float) -> int:
        name = self._count_key(key)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.pexpire(name, max(1, math.ceil(window_seconds * 1000)))
            count, _ = await pipe.execute()
        return int(count)

    async def lock(self, key: str, *, seconds: float) -> None:
        millis = max(1, math.ceil(seconds * 1000))
        name = self._lock_key(key)
        # PEXPIRE ... GT keeps a longer lock another replica set; SET NX makes a new one.
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(name, 1, px=millis, nx=True)
            pipe.pexpire(name, millis, gt=True)
            await pipe.execute()

    async def locked_for(self, keys: Sequence[str]) -> float:
        if not keys:
            return 0.0
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pttl(self._lock_key(key))
            remaining = await pipe.execute()
        return max(0, *(int(ms) for ms in remaining)) / 1000

    async def clear(self, key: str) -> None:
        await self._client.delete(self._count_key(key), self._lock_key(key))

    async def aclose(self) -> None:
        await self._client.aclose()


def failure_store(settings: IdentitySettings) -> FailureStore:
    """The binding the settings choose: Redis when ``throttle_redis_url`` is set."""
    if settings.throttle_redis_url:
        return RedisFailureStore.from_url(settings.throttle_redis_url)
    return MemoryFailureStore()


@dataclass(frozen=True)
class SignInThrottle:
    """The back-off rule: after ``limit`` failures within the window, each further failure
    locks its account (or address) for ``base * 2**n`` seconds, n = failures past the limit
    minus one, at most ``max_delay``. A locked sign-in is refused before any password is
    checked, the right one included: a lock that let the right password through would tell
    the attacker when they found it.
    """

    store: FailureStore
    account_limit: int
    address_limit: int
    window_seconds: float
    base_delay_seconds: float
    max_delay_seconds: float

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> SignInThrottle:
        return cls(
            store=failure_store(settings),
            account_limit=settings.throttle_account_failures,
            address_limit=settings.throttle_address_failures,
            window_seconds=settings.throttle_window_seconds,
            base_delay_seconds=settings.throttle_base_delay_seconds,
            max_delay_seconds=settings.throttle_max_delay_seconds,
        )

    @staticmethod
    def _keys(email: str, address: str) -> tuple[str, str]:
        return f"account:{email}", f"address:{address}"

    def delay(self, failures: int, limit: int) -> float:
        """The lock one more failure imposes, ``failures`` counted so far (it included)."""
        past = failures - limit
        if past <= 0:
            return 0.0
        growth = float(2 ** min(past - 1, 62))
        return min(self.max_delay_seconds, self.base_delay_seconds * growth)

    async def check(self, *, email: str, address: str) -> None:
        """Raise :class:`TooManySignIns` (with ``Retry-After``) while either key is locked."""
        try:
            wait = await self.store.locked_for(self._keys(email, address))
        except Exception as exc:
            # A store outage leaves sign-ins unthrottled rather than impossible; the bounded
            # hashing still caps how fast anyone can guess.
            logger.warning("sign-in throttle unavailable, not throttling: %r", exc)
            return
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooManySignIns(
                f"Too many failed sign-ins for this account or from this address; try again"
                f" in {seconds} s.",
                headers={"Retry-After": str(seconds)},
                retry_after=seconds,
            )

    async def failed(self, *, email: str, address: str) -> None:
        """Count a failure on both keys, and lock the ones past their limit."""
        account, client = self._keys(email, address)
        try:
            for key, limit in ((account, self.account_limit), (client, self.address_limit)):
                count = await self.store.add_failure(key, window_seconds=self.window_seconds)
                delay = self.delay(count, limit)
                if delay > 0:
                    await self.store.lock(key, seconds=delay)
        except Exception as exc:
            logger.warning("sign-in throttle unavailable, failure not counted: %r", exc)

    async def succeeded(self, *, email: str) -> None:
        """The account's owner is back: its count starts again (the address's does not, or an
        attacker with one account of their own could reset it between guesses)."""
        try:
            await self.store.clear(self._keys(email, "")[0])
        except Exception as exc:
            logger.warning("sign-in throttle unavailable, success not recorded: %r", exc)
