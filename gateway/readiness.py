"""Readiness: whether every upstream service has a ready replica, checked at most once per
``cache_seconds`` however often ``/readyz`` is asked."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import anyio

from shop.kernel.http import CallFailure, Replica, Upstream

logger = logging.getLogger("gateway")


class Readiness:
    """Every replica's ``/readyz``, all at once, around the circuit breakers: readiness
    reports the upstreams as they are now, and must neither count toward a circuit nor be
    refused by one."""

    def __init__(
        self, upstreams: Mapping[str, Upstream], *, timeout: float, cache_seconds: float
    ) -> None:
        self._upstreams = upstreams
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._last: tuple[float, bool] | None = None
        self._lock = anyio.Lock()

    async def _replica(self, upstream: Upstream, replica: Replica) -> str | None:
        """``None`` when the replica's /readyz answers 200, else why not."""
        try:
            with anyio.fail_after(self._timeout):
                status = await upstream.status_of(replica, "/readyz")
        except TimeoutError:
            return "timeout"
        except CallFailure as exc:
            return f"unreachable ({type(exc).__name__})"
        return None if status == 200 else f"answered {status}"

    async def checks(self) -> dict[str, str]:
        """Each upstream service: ``"ok"`` when at least one replica is ready."""
        results: dict[str, list[str | None]] = {name: [] for name in self._upstreams}

        async def check(name: str, upstream: Upstream, replica: Replica) -> None:
            results[name].append(await self._replica(upstream, replica))

        async with anyio.create_task_group() as tasks:
            for name, upstream in self._upstreams.items():
                for replica in upstream.replicas:
                    tasks.start_soon(check, name, upstream, replica)
        checks = {}
        for name, outcomes in results.items():
            failures = [reason for reason in outcomes if reason is not None]
            checks[name] = "ok" if len(failures) < len(outcomes) else f"down: {failures[0]}"
        return checks

    async def ready(self) -> bool:
        """Whether every upstream service has a ready replica, as last checked.

        Callers arriving while a check runs wait for its result: a flood of /readyz is not
        multiplied into every service. Which upstream is down, and why, is logged.
        """
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._cache_seconds:
                return self._last[1]
            checks = await self.checks()
            for name, outcome in checks.items():
                if outcome != "ok":
                    logger.warning("not ready: upstream %s is %s", name, outcome)
            ready = all(outcome == "ok" for outcome in checks.values())
            self._last = (time.monotonic(), ready)
            return ready
