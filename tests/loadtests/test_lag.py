"""bench/lag.py: the events' lag, read back from a consumer's inbox."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from bench.lag import drain, event_lags
from shop.catalog.models import Base
from shop.catalog.models import inbox as catalog_inbox
from shop.kernel.db import create_engine


def test_the_lag_of_the_events_that_happened_in_the_window(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    start = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    # 100 events applied 1..100 ms after they happened; one from the step before, applied in
    # the window (a backlog: not this window's); one that happened in the window and was
    # applied after it (it is).
    rows = [
        {
            "event_id": uuid.uuid4(),
            "type": "inventory.StockChanged",
            "occurred_at": start + timedelta(seconds=index),
            "received_at": start + timedelta(seconds=index, milliseconds=index + 1),
        }
        for index in range(100)
    ]
    backlog = start - timedelta(seconds=30)
    rows.append({**rows[0], "event_id": uuid.uuid4(), "occurred_at": backlog})
    late = start + timedelta(seconds=200)
    rows.append(
        {
            **rows[0],
            "event_id": uuid.uuid4(),
            "occurred_at": late,
            "received_at": late + timedelta(seconds=200),
        }
    )

    async def fill() -> None:
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(insert(catalog_inbox), rows)
        await engine.dispose()

    asyncio.run(fill())
    (lag,) = event_lags({"catalog": url}, start, start + timedelta(minutes=5), settle=0.01)
    assert lag.consumer == "catalog"
    assert lag.events == 101
    assert 50 <= lag.p50_ms <= 52
    assert lag.p99_ms == 100
    assert lag.max_ms == 200_000
    assert (
        event_lags(
            {"catalog": url}, start - timedelta(hours=2), start - timedelta(hours=1), settle=0.01
        )
        == []
    )


def test_drain_waits_until_the_backlog_is_applied(tmp_path: Path) -> None:
    """A consumer still applying the step before's events (here: 10 rows, one every 50 ms):
    drain returns once none has come for its quiet time, and counts them."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    now = datetime.now(UTC)

    def row() -> dict[str, object]:
        return {
            "event_id": uuid.uuid4(),
            "type": "inventory.StockChanged",
            "occurred_at": now,
            "received_at": now,
        }

    async def create() -> None:
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(insert(catalog_inbox), [row()])
        await engine.dispose()

    async def apply_backlog() -> None:
        engine = create_engine(url)
        for _ in range(10):
            await asyncio.sleep(0.05)
            async with engine.begin() as conn:
                await conn.execute(insert(catalog_inbox), [row()])
        await engine.dispose()

    asyncio.run(create())
    backlog = threading.Thread(target=asyncio.run, args=(apply_backlog(),))
    backlog.start()
    try:
        took, applied = drain({"catalog": url}, quiet=0.3, every=0.02, patience=10)
        assert not backlog.is_alive()  # it returned once the backlog was applied, not before
    finally:
        backlog.join(timeout=10)
    assert 9 <= applied <= 10  # the first may have come before drain's first count
    assert 0.8 <= took < 5
