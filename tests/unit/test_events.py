"""The kernel's integration events: recording in the change's transaction, the relay, the
in-process bus and the consumer's inbox, on a private SQLite file with tables of a made-up
context (``kata``).

The contexts' events and read models are in tests/integration/test_publishers.py and
tests/integration/test_read_models.py; the monolith end to end in
tests/integration/test_events_monolith.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shop.kernel.db import Database
from shop.kernel.events import (
    Consumed,
    Deliver,
    Envelope,
    Event,
    Handler,
    InProcessBus,
    Relay,
    apply_newer,
    consumer,
    inbox_table,
    on_commit,
    outbox_table,
    record,
)

pytestmark = pytest.mark.anyio

metadata = MetaData()
outbox = outbox_table(metadata, "kata")
inbox = inbox_table(metadata, "kata")
effects = Table(
    "kata_effects",
    metadata,
    Column("item", Integer, primary_key=True, autoincrement=False),
    Column("times", Integer, nullable=False),
)
"""How often a handler applied an event about each item."""
views = Table(
    "kata_views",
    metadata,
    Column("item", Integer, primary_key=True, autoincrement=False),
    Column("value", String(20), nullable=False),
    Column("sequence", BigInteger, nullable=False),
)
"""A read model."""


class Noted(Event):
    TYPE = "kata.Noted"

    item: int
    value: str


class NotedView(Consumed):
    item: int


@dataclass
class RecordingBus:
    """A bus that keeps what it is given; it refuses the next ``refuse`` publishes."""

    refuse: int = 0
    published: list[tuple[str, Envelope]] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)
    """Set by each publish that went through (then replaced)."""

    async def publish(self, source: str, envelopes: Sequence[Envelope]) -> None:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("the broker is away")
        self.published.extend((source, envelope) for envelope in envelopes)
        self.arrived.set()
        self.arrived = anyio.Event()

    async def next_publish(self) -> None:
        with anyio.fail_after(5):
            await self.arrived.wait()

    async def published_count(self, count: int) -> None:
        """Wait until ``count`` envelopes were published in all (some may be already)."""
        with anyio.fail_after(5):
            while len(self.published) < count:
                await self.arrived.wait()

    async def declare(self, consumers: Mapping[str, Sequence[str]]) -> None:
        raise NotImplementedError

    async def subscribe(self, consumer: str, types: Sequence[str], deliver: Deliver) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield database
    finally:
        await database.dispose()


async def note(db: Database, *events: tuple[int, str]) -> None:
    """Record ``(item, value)`` events in one committed transaction."""
    async with db.writer() as session, session.begin():
        await record(
            session, outbox, *((str(item), Noted(item=item, value=value)) for item, value in events)
        )


async def outbox_rows(db: Database) -> list[tuple[int, str, dict[str, object], bool]]:
    """``(position, aggregate_id, payload, published)`` of every outbox row, in order."""
    async with db.reader() as session:
        rows = await session.execute(
            select(
                outbox.c.position,
                outbox.c.aggregate_id,
                outbox.c.payload,
                outbox.c.published_at.is_not(None),
            ).order_by(outbox.c.position)
        )
        return [(row[0], row[1], row[2], bool(row[3])) for row in rows]


async def times_applied(db: Database) -> dict[int, int]:
    async with db.reader() as session:
        rows = await session.execute(select(effects.c.item, effects.c.times))
        return {row[0]: row[1] for row in rows}


async def inbox_size(db: Database) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(inbox)) or 0)


async def count_effect(session: AsyncSession, envelope: Envelope) -> None:
    """A handler with a visible effect: counts the events applied per item."""
    item = NotedView.model_validate(envelope.payload).item
    changed = await session.execute(
        update(effects).where(effects.c.item == item).values(times=effects.c.times + 1)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        await session.execute(effects.insert().values(item=item, times=1))


def failing(times: int, on_item: int | None = None) -> Handler:
    """:func:`count_effect`, but raising the first ``times`` times it gets ``on_item``'s event
    (any item's when None)."""
    left = {"failures": times}

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        await count_effect(session, envelope)
        if (on_item is None or envelope.payload["item"] == on_item) and left["failures"] > 0:
            left["failures"] -= 1
            raise RuntimeError("the handler failed")

    return handler


def envelope(item: int, value: str, sequence: int, event_id: uuid.UUID | None = None) -> Envelope:
    return Envelope(
        id=event_id or uuid.uuid4(),
        type=Noted.TYPE,
        version=1,
        source="kata",
        aggregate_id=str(item),
        sequence=sequence,
        occurred_at=datetime.now(UTC),
        payload={"item": item, "value": value},
    )


# --------------------------------------------------------------------------- recording


async def test_a_recorded_event_is_visible_only_once_its_transaction_commits(
    db: Database,
) -> None:
    async with db.writer() as session, session.begin():
        await record(session, outbox, ("7", Noted(item=7, value="a")))
        assert await outbox_rows(db) == []  # another connection sees nothing yet

    ((position, aggregate, payload, published),) = await outbox_rows(db)
    assert (aggregate, payload, published) == ("7", {"item": 7, "value": "a"}, False)
    async with db.reader() as session:
        row = (await session.execute(select(outbox).where(outbox.c.position == position))).one()
    assert (row.type, row.version) == ("kata.Noted", 1)
    assert row.occurred_at.tzinfo is not None


async def test_a_rolled_back_change_takes_its_events_with_it_and_wakes_no_relay(
    db: Database,
) -> None:
    wakes: list[str] = []
    undo = on_commit(outbox.name, lambda: wakes.append("woken"))

    async def failed_change() -> None:
        async with db.writer() as session, session.begin():
            await record(session, outbox, ("1", Noted(item=1, value="a")))
            raise RuntimeError("the change failed")

    try:
        with pytest.raises(RuntimeError):
            await failed_change()

        assert await outbox_rows(db) == []
        assert wakes == []

        await note(db, (1, "b"))

        assert [payload for _, _, payload, _ in await outbox_rows(db)] == [
            {"item": 1, "value": "b"}
        ]
        assert wakes == ["woken"]
    finally:
        undo()


async def test_recording_nothing_writes_nothing(db: Database) -> None:
    async with db.writer() as session, session.begin():
        await record(session, outbox)

    assert await outbox_rows(db) == []


def test_an_envelope_survives_its_json_form() -> None:
    original = envelope(3, "x", 42)

    assert Envelope.from_json(original.to_json()) == original


# --------------------------------------------------------------------------- the relay


async def test_the_relay_publishes_committed_rows_in_order_and_marks_them_sent(
    db: Database,
) -> None:
    await note(db, (1, "a"), (2, "a"))
    await note(db, (1, "b"))
    bus = RecordingBus()
    relay = Relay("kata", db, outbox, bus)

    assert await relay.publish_pending() == 3

    assert [source for source, _ in bus.published] == ["kata"] * 3
    sent = [item for _, item in bus.published]
    assert [(e.aggregate_id, e.payload["value"]) for e in sent] == [
        ("1", "a"),
        ("2", "a"),
        ("1", "b"),
    ]
    assert [e.sequence for e in sent] == sorted({e.sequence for e in sent})
    assert {e.type for e in sent} == {"kata.Noted"}
    assert len({e.id for e in sent}) == 3
    assert all(published for *_, published in await outbox_rows(db))

    assert await relay.publish_pending() == 0
    assert len(bus.published) == 3


async def test_rows_a_failed_publish_left_go_out_with_the_next_pass(db: Database) -> None:
    await note(db, (1, "a"))
    bus = RecordingBus(refuse=1)
    relay = Relay("kata", db, outbox, bus)

    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    assert [published for *_, published in await outbox_rows(db)] == [False]

    assert await relay.publish_pending() == 1
    assert [e.payload for _, e in bus.published] == [{"item": 1, "value": "a"}]
    assert [published for *_, published in await outbox_rows(db)] == [True]


async def test_a_running_relay_is_woken_by_the_commit_that_recorded(db: Database) -> None:
    bus = RecordingBus()
    # No timer would wake it within the test: only the commit can.
    relay = Relay("kata", db, outbox, bus, interval=3600)
    await note(db, (5, "first"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(relay.run)
        await bus.published_count(1)  # its first pass; then it waits
        await note(db, (5, "woken"))
        await bus.published_count(2)  # the commit woke it (perhaps before note returned)
        tasks.cancel_scope.cancel()

    assert [e.payload["value"] for _, e in bus.published] == ["first", "woken"]


async def test_a_relay_retries_after_a_failed_pass(db: Database) -> None:
    await note(db, (1, "a"))
    bus = RecordingBus(refuse=2)
    relay = Relay("kata", db, outbox, bus, interval=3600, retry_after=0.01)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(relay.run)
        await bus.next_publish()
        tasks.cancel_scope.cancel()

    assert [e.payload["value"] for _, e in bus.published] == ["a"]


# --------------------------------------------------------------------------- the in-process bus


async def test_a_failing_handler_gets_the_event_again_on_the_next_pass(db: Database) -> None:
    bus = InProcessBus()
    # It fails twice on item 1: in the pass's batch, and again alone.
    await bus.subscribe("kata", [Noted.TYPE], consumer(db, inbox, {Noted.TYPE: failing(2, 1)}))
    relay = Relay("kata", db, outbox, bus)
    await note(db, (1, "a"), (2, "a"))

    with pytest.raises(RuntimeError):
        await relay.publish_pending()

    # Nothing applied (the handler's writes rolled back with its inbox row); the event after
    # it waits, so the consumer sees the publisher's order.
    assert await times_applied(db) == {}
    assert await inbox_size(db) == 0
    assert [published for *_, published in await outbox_rows(db)] == [False, False]

    assert await relay.publish_pending() == 2

    assert await times_applied(db) == {1: 1, 2: 1}
    assert await inbox_size(db) == 2
    assert [published for *_, published in await outbox_rows(db)] == [True, True]
    assert bus.dead == []


async def test_a_batch_that_fails_is_delivered_one_by_one_in_the_same_pass(db: Database) -> None:
    """A pass hands a consumer its events in one transaction; when that fails, the same pass
    delivers them one by one, so a failure that does not come back costs no second pass."""
    bus = InProcessBus()
    await bus.subscribe("kata", [Noted.TYPE], consumer(db, inbox, {Noted.TYPE: failing(1, 2)}))
    relay = Relay("kata", db, outbox, bus)
    await note(db, (1, "a"), (2, "a"), (3, "a"))

    assert await relay.publish_pending() == 3

    assert await times_applied(db) == {1: 1, 2: 1, 3: 1}
    assert await inbox_size(db) == 3
    assert [published for *_, published in await outbox_rows(db)] == [True, True, True]


async def test_a_consumer_applies_a_batch_in_order_and_an_event_twice_in_it_once(
    db: Database,
) -> None:
    deliver = consumer(db, inbox, {Noted.TYPE: count_effect})
    first, second = envelope(4, "a", 1), envelope(5, "b", 2)

    await deliver([first, second, first])

    assert await times_applied(db) == {4: 1, 5: 1}
    assert await inbox_size(db) == 2


async def test_a_handler_failing_past_the_limit_is_dead_lettered_and_the_rest_flows(
    db: Database,
) -> None:
    bus = InProcessBus(delivery_limit=3)
    stuck = consumer(db, inbox, {Noted.TYPE: failing(times=100, on_item=1)})
    await bus.subscribe("stuck", [Noted.TYPE], stuck)
    relay = Relay("kata", db, outbox, bus)
    await note(db, (1, "poison"), (2, "fine"))

    for _ in range(2):
        with pytest.raises(RuntimeError):
            await relay.publish_pending()
    assert bus.dead == []

    assert await relay.publish_pending() == 2  # the third failure dead-letters it

    ((consumer_name, dead),) = bus.dead
    assert (consumer_name, dead.payload) == ("stuck", {"item": 1, "value": "poison"})
    assert await times_applied(db) == {2: 1}
    assert [published for *_, published in await outbox_rows(db)] == [True, True]

    await note(db, (1, "later"))
    with pytest.raises(RuntimeError):
        await relay.publish_pending()  # a new event is a new delivery: it gets its own tries


async def test_redeliveries_to_a_consumer_that_had_applied_the_event_do_nothing(
    db: Database,
) -> None:
    bus = InProcessBus()
    # Two consumers on one database, each with its own inbox, as two contexts would be.
    other_inbox = inbox_table(MetaData(), "other")
    async with db.engine.begin() as conn:
        await conn.run_sync(other_inbox.create)
    other_effects: list[uuid.UUID] = []

    async def remember(_session: AsyncSession, envelope: Envelope) -> None:
        other_effects.append(envelope.id)

    await bus.subscribe("other", [Noted.TYPE], consumer(db, other_inbox, {Noted.TYPE: remember}))
    await bus.subscribe("kata", [Noted.TYPE], consumer(db, inbox, {Noted.TYPE: failing(1)}))
    relay = Relay("kata", db, outbox, bus)
    await note(db, (1, "a"))

    with pytest.raises(RuntimeError):
        await relay.publish_pending()
    assert await relay.publish_pending() == 1

    assert len(other_effects) == 1  # delivered twice, applied once
    assert await times_applied(db) == {1: 1}


# --------------------------------------------------------------------------- consumers


async def test_a_consumer_applies_an_event_once_when_it_is_delivered_twice(
    db: Database,
) -> None:
    deliver = consumer(db, inbox, {Noted.TYPE: count_effect})
    event = envelope(4, "a", 1)

    await deliver([event])
    await deliver([event])

    assert await times_applied(db) == {4: 1}
    assert await inbox_size(db) == 1


async def test_a_handler_that_fails_leaves_no_inbox_row_so_the_event_is_applied_later(
    db: Database,
) -> None:
    deliver = consumer(db, inbox, {Noted.TYPE: failing(1)})
    event = envelope(4, "a", 1)

    with pytest.raises(RuntimeError):
        await deliver([event])
    assert await inbox_size(db) == 0
    assert await times_applied(db) == {}

    await deliver([event])

    assert await times_applied(db) == {4: 1}
    assert await inbox_size(db) == 1


async def test_a_consumer_ignores_the_types_it_has_no_handler_for(db: Database) -> None:
    deliver = consumer(db, inbox, {"kata.Other": count_effect})

    await deliver([envelope(4, "a", 1)])

    assert await times_applied(db) == {}
    assert await inbox_size(db) == 0


async def test_apply_newer_never_moves_a_row_backwards(db: Database) -> None:
    async def put(value: str, sequence: int) -> bool:
        async with db.writer() as session, session.begin():
            return await apply_newer(
                session, views, key={"item": 1}, values={"value": value}, sequence=sequence
            )

    async def stored() -> tuple[str, int]:
        async with db.reader() as session:
            row = (await session.execute(select(views.c.value, views.c.sequence))).one()
        return row[0], row[1]

    assert await put("five", 5)
    assert not await put("three", 3)
    assert not await put("five again", 5)
    assert await stored() == ("five", 5)

    assert await put("seven", 7)
    assert await stored() == ("seven", 7)
