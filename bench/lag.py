"""Event lag under load: how long an integration event took from its change to its read model.

Every consumer's inbox row keeps when its event happened (``occurred_at``, written with the
change in the publisher's transaction) and when it was applied (``received_at``, written
with the read model's update), on the same machine's clock. The lag of the events applied
in a window is read back from the consumers' own databases after a run: nothing is added to
the hot path to measure it.

The events counted are those that *happened* in the window. Counting those applied in it
instead would charge the window with the backlog of the step before (a saturated one, whose
events are still being applied when the next step begins). Events that happened near the
window's end may still be on their way when it closes: the reading waits until the count
stops growing (a few seconds at most). And before the window opens, :func:`drain` waits
until the consumers have applied that backlog, so that the window's events do not queue
behind it: the lag at half load is then the lag of half load, not the tail of the step
before.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text

from shop.kernel.db import create_engine


@dataclass(frozen=True)
class Lag:
    consumer: str
    events: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def _utc(value: datetime | str) -> datetime:
    # SQLite hands the column back as text through text(); PostgreSQL as an aware datetime.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _lags(url: str, table: str, since: datetime, until: datetime) -> list[float]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(f"SELECT occurred_at, received_at FROM {table}")  # noqa: S608 (ours)
            )
            pairs = [(_utc(occurred), _utc(received)) for occurred, received in rows]
    finally:
        await engine.dispose()
    return [
        (received - occurred).total_seconds() * 1000
        for occurred, received in pairs
        if since <= occurred <= until
    ]


def event_lags(
    consumers: Mapping[str, str],
    since: datetime,
    until: datetime,
    *,
    settle: float = 0.5,
    patience: float = 10.0,
) -> list[Lag]:
    """The lag of the events that happened in the window, for each consumer (context -> its
    database URL); consumers that applied none are left out. Read again every ``settle``
    seconds until no consumer applied another of them meanwhile, or ``patience`` ran out."""

    async def read() -> dict[str, list[float]]:
        return {
            consumer: await _lags(url, f"{consumer}_inbox", since, until)
            for consumer, url in consumers.items()
        }

    async def measure() -> list[Lag]:
        found = await read()
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            await asyncio.sleep(settle)
            again = await read()
            if all(len(again[name]) == len(found[name]) for name in found):
                break
            found = again
        return [
            Lag(consumer, len(lags), statistics.median(lags), _percentile(lags, 0.99), max(lags))
            for consumer, lags in found.items()
            if lags
        ]

    return asyncio.run(measure())


def drain(
    consumers: Mapping[str, str], *, quiet: float = 2.0, every: float = 0.5, patience: float = 120.0
) -> tuple[float, int]:
    """Wait until no consumer has applied another event for ``quiet`` seconds (the load is
    off: what still comes is the backlog), at most ``patience`` seconds; returns how long it
    took and how many events were applied meanwhile."""

    async def wait() -> tuple[float, int]:
        engines = {name: create_engine(url, pool_size=1) for name, url in consumers.items()}

        async def total() -> int:
            applied = 0
            for name, engine in engines.items():
                async with engine.connect() as conn:
                    rows = await conn.execute(
                        text(f"SELECT count(*) FROM {name}_inbox")  # noqa: S608 (ours)
                    )
                    applied += int(rows.scalar_one())
            return applied

        try:
            started = time.monotonic()
            first = last = await total()
            still_since = started
            while time.monotonic() - started < patience:
                await asyncio.sleep(every)
                now = await total()
                if now != last:
                    last, still_since = now, time.monotonic()
                elif time.monotonic() - still_since >= quiet:
                    break
            return time.monotonic() - started, last - first
        finally:
            for engine in engines.values():
                await engine.dispose()

    return asyncio.run(wait())
