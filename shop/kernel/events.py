"""Integration events: recorded with the change that made them, published after it commits.

A context that publishes declares its events as :class:`Event` subclasses (pydantic, in its
own ``events.py``, in its own terms) and records each one in its own ``<context>_outbox``
table, in the transaction that made the change (:func:`record`): there is no dual write.
A relay (:class:`Relay`) publishes the committed rows in order on the deployment's bus and
marks them sent; the bus delivers each to the consuming contexts' handlers, which keep an
inbox (``<context>_inbox``) so that a redelivered event has no second effect.

Every event travels as an :class:`Envelope`: its id, type (``inventory.StockChanged``),
schema version, aggregate id, the outbox position of its publisher (``sequence``, which
grows with every event of one aggregate and lets a read model refuse an older state), when
it happened, the ``traceparent`` of the request that made it, and the payload.

A read model that starts after its publisher has a past is built from the publisher's
:data:`Snapshot` (the current state of every aggregate, as the events a consumer would have
received) by :func:`backfill`, through the consumer's own handlers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import anyio
from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session as SyncSession

from shop.kernel import correlation
from shop.kernel.db import Database, UtcDateTime, is_sqlite, utcnow

logger = logging.getLogger("shop.events")

RELAY_BATCH = 100
"""Outbox rows one relay pass publishes at most."""
BACKFILL_BATCH = 100
"""Snapshot envelopes a backfill hands its consumer in one transaction."""
PASS_LIMIT = 10.0
"""Seconds one relay pass may take; it is not cut short by the app stopping before that."""


class Event(BaseModel):
    """A fact a context publishes, in its own terms; subclasses set ``TYPE`` and ``VERSION``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    """``<context>.<Name>``: the routing key of the event on the bus."""
    VERSION: ClassVar[int] = 1


class Consumed(BaseModel):
    """The shape a consumer reads from an event, in the consumer's terms (extra keys ignored:
    a publisher may add fields without breaking its consumers)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


@dataclass(frozen=True)
class Envelope:
    id: uuid.UUID
    type: str
    version: int
    source: str
    """The publishing context."""
    aggregate_id: str
    sequence: int
    """The row's position in the publisher's outbox: larger is newer, for one aggregate."""
    occurred_at: datetime
    payload: Mapping[str, Any]
    traceparent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "version": self.version,
            "source": self.source,
            "aggregate_id": self.aggregate_id,
            "sequence": self.sequence,
            "occurred_at": self.occurred_at.isoformat(),
            "payload": dict(self.payload),
            "traceparent": self.traceparent,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Envelope:
        return cls(
            id=uuid.UUID(str(data["id"])),
            type=str(data["type"]),
            version=int(data["version"]),
            source=str(data["source"]),
            aggregate_id=str(data["aggregate_id"]),
            sequence=int(data["sequence"]),
            occurred_at=datetime.fromisoformat(str(data["occurred_at"])),
            payload=dict(data["payload"]),
            traceparent=data.get("traceparent"),
        )


# --- tables ----------------------------------------------------------------------------


def outbox_table(metadata: MetaData, context: str) -> Table:
    """``<context>_outbox`` in the context's own metadata (and migration stream)."""
    return Table(
        f"{context}_outbox",
        metadata,
        Column("position", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("type", String(100), nullable=False),
        Column("version", Integer, nullable=False),
        Column("aggregate_id", String(100), nullable=False),
        Column("occurred_at", UtcDateTime, nullable=False),
        Column("payload", JSON, nullable=False),
        Column("traceparent", String(55), nullable=True),
        Column("published_at", UtcDateTime, nullable=True, index=True),
        # Positions are never reused on SQLite either, even after the outbox is pruned:
        # a consumer would take a reused one for an older event.
        sqlite_autoincrement=True,
    )


def inbox_table(metadata: MetaData, context: str) -> Table:
    """``<context>_inbox``: the events the context has applied, by id (once each), with
    when each happened and when it was applied (their difference is the event's lag, which
    the benchmarks report)."""
    return Table(
        f"{context}_inbox",
        metadata,
        Column("event_id", Uuid, primary_key=True),
        Column("type", String(100), nullable=False),
        Column("occurred_at", UtcDateTime, nullable=False),
        Column("received_at", UtcDateTime, nullable=False),
    )


# --- recording ---------------------------------------------------------------------------

_PENDING = "shop.events.recorded"


async def record(session: AsyncSession, outbox: Table, *events: tuple[str, Event]) -> None:
    """Append ``(aggregate_id, event)`` pairs to ``outbox`` in the session's transaction.

    They become visible to the relay when (and only if) that transaction commits; the
    relays of this process are woken then (:func:`on_commit`).
    """
    if not events:
        return
    now = utcnow()
    context = correlation.current()
    trace = context.traceparent if context is not None else None
    await session.execute(
        insert(outbox),
        [
            {
                "event_id": uuid.uuid4(),
                "type": item.TYPE,
                "version": item.VERSION,
                "aggregate_id": aggregate_id,
                "occurred_at": now,
                "payload": item.model_dump(mode="json"),
                "traceparent": trace,
            }
            for aggregate_id, item in events
        ],
    )
    session.sync_session.info.setdefault(_PENDING, set()).add(outbox.name)


_wakers: dict[str, list[Callable[[], None]]] = {}


def on_commit(table: str, wake: Callable[[], None]) -> Callable[[], None]:
    """Call ``wake`` after every commit that recorded into ``table``; returns the undo."""
    _wakers.setdefault(table, []).append(wake)
    return lambda: _wakers[table].remove(wake)


@event.listens_for(SyncSession, "after_commit")
def _after_commit(session: SyncSession) -> None:
    for table in session.info.pop(_PENDING, ()):
        for wake in _wakers.get(table, ()):
            wake()


@event.listens_for(SyncSession, "after_rollback")
def _after_rollback(session: SyncSession) -> None:
    session.info.pop(_PENDING, None)


# --- the bus -----------------------------------------------------------------------------

Deliver = Callable[[Sequence[Envelope]], Awaitable[None]]
"""Applies a batch of envelopes for one consumer, in order, all or none (:func:`consumer`).

A bus hands over what it has at hand at once (a relay pass's rows, the messages a broker
sent ahead): one transaction for the batch instead of one per event, so a consumer keeps up
under load with the fewest round trips. If the batch fails, the bus delivers its envelopes
one by one, so one bad event is told apart from the rest."""


class Bus(Protocol):
    """How events leave their publisher's process and reach their consumers.

    ``publish`` returns once the bus has taken the envelopes (a broker's confirms); a
    subscription delivers each envelope of its types to ``deliver`` until the bus closes,
    again if ``deliver`` raised (up to the bus's delivery limit, then to a dead letter).
    """

    async def publish(self, source: str, envelopes: Sequence[Envelope]) -> None: ...

    async def declare(self, consumers: Mapping[str, Sequence[str]]) -> None:
        """Make every consumer's place on the bus (a broker's queues), by the types it reads,
        before anything is published: no event waits for its consumer's first start."""
        ...

    async def subscribe(self, consumer: str, types: Sequence[str], deliver: Deliver) -> None:
        """Start delivering; returns once the subscription is in place."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class InProcessBus:
    """The monolith's bus: ``publish`` hands the envelopes to the subscribers in this process.

    A handler's failure is retried by the next relay pass (the row stays unpublished) up to
    ``delivery_limit`` times for one consumer, then logged as dead and skipped by that
    consumer, so one bad event cannot stop the others.
    """

    delivery_limit: int = 5
    _subscribers: dict[str, tuple[frozenset[str], Deliver]] = field(default_factory=dict)
    _failures: dict[tuple[str, uuid.UUID], int] = field(default_factory=dict)
    dead: list[tuple[str, Envelope]] = field(default_factory=list)

    async def publish(self, source: str, envelopes: Sequence[Envelope]) -> None:
        failed: Exception | None = None
        for consumer, (types, deliver) in self._subscribers.items():
            wanted = [
                envelope
                for envelope in envelopes
                if envelope.type in types
                and self._failures.get((consumer, envelope.id), 0) < self.delivery_limit
            ]
            if not wanted:
                continue
            if len(wanted) > 1:
                try:
                    await deliver(wanted)
                except Exception:  # noqa: S110 (found again, and logged, one by one below)
                    pass
                else:
                    for envelope in wanted:
                        self._failures.pop((consumer, envelope.id), None)
                    continue
            # One of them failed (or there is one): one by one, the ones before it applied.
            failed = await self._one_by_one(consumer, deliver, wanted) or failed
        if failed is not None:
            raise failed

    async def _one_by_one(
        self, consumer: str, deliver: Deliver, envelopes: Sequence[Envelope]
    ) -> Exception | None:
        """Deliver each in turn; stop at the first failure that is not dead yet (a consumer
        sees one aggregate's events in order) and return it."""
        for envelope in envelopes:
            key = (consumer, envelope.id)
            try:
                await deliver([envelope])
                self._failures.pop(key, None)
            except Exception as exc:
                count = self._failures[key] = self._failures.get(key, 0) + 1
                if count < self.delivery_limit:
                    return exc
                logger.error(
                    "%s failed %d times on %s %s; dead-lettered",
                    consumer,
                    count,
                    envelope.type,
                    envelope.id,
                    exc_info=exc,
                )
                self.dead.append((consumer, envelope))
        return None

    async def declare(self, consumers: Mapping[str, Sequence[str]]) -> None:
        """Nothing to make: the consumers are in this process, or nowhere."""

    async def subscribe(self, consumer: str, types: Sequence[str], deliver: Deliver) -> None:
        self._subscribers[consumer] = (frozenset(types), deliver)

    async def aclose(self) -> None:
        self._subscribers.clear()


# --- consuming ---------------------------------------------------------------------------

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """A consuming context's handler of one event type, applied once per event id."""

    type: str
    handler: Handler


def consumer(db: Database, inbox: Table, handlers: Mapping[str, Handler]) -> Deliver:
    """``deliver`` for one consuming context: each envelope applied at most once.

    A batch is applied in one transaction, in order. Each envelope's inbox row and its
    handler's writes commit together, so a redelivery after a crash between them is either
    applied (nothing was) or skipped (both were); an envelope whose id the inbox holds
    (delivered before, or twice in the batch) is skipped.
    """

    async def deliver(envelopes: Sequence[Envelope]) -> None:
        wanted = [envelope for envelope in envelopes if envelope.type in handlers]
        if not wanted:
            return
        async with db.writer() as session, session.begin():
            first_time = _insert(session, inbox).on_conflict_do_nothing(
                index_elements=[inbox.c.event_id]
            )
            for envelope in wanted:
                with correlation.scope(envelope.traceparent):
                    noted = await session.execute(
                        first_time.values(
                            event_id=envelope.id,
                            type=envelope.type,
                            occurred_at=envelope.occurred_at,
                            received_at=utcnow(),
                        )
                    )
                    if noted.rowcount:  # type: ignore[attr-defined]
                        await handlers[envelope.type](session, envelope)

    return deliver


def _insert(session: AsyncSession, table: Table) -> Any:
    """An INSERT of ``table`` in the session's dialect (for its ON CONFLICT clauses)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


async def apply_newer(
    session: AsyncSession,
    table: Table,
    *,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    sequence: int,
) -> bool:
    """Upsert one aggregate's row of a read model, unless the row holds a newer state.

    ``table`` has a ``sequence`` column and a primary key made of ``key``'s columns. The row
    is inserted, or updated with ``values`` and ``sequence``, only when ``sequence`` is
    greater than the one it holds: an older event, delivered late, never moves it backwards.
    True if the row was written.
    """
    row = {**key, **values, "sequence": sequence}
    changes = {**values, "sequence": sequence}
    newer = table.c.sequence < sequence
    statement = (
        _insert(session, table)
        .values(row)
        .on_conflict_do_update(index_elements=list(key), set_=changes, where=newer)
    )
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- the relay ---------------------------------------------------------------------------


@dataclass
class Relay:
    """Publishes one context's committed outbox rows, oldest first, and marks them sent.

    Woken by every commit that recorded an event in this process, and every ``interval``
    seconds anyway (rows other replicas wrote, rows a failed publish left). With several
    replicas, each pass takes its rows with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL); SQLite
    has one writer at a time.
    """

    source: str
    db: Database
    outbox: Table
    bus: Bus
    interval: float = 1.0
    retry_after: float = 0.5
    _wake: anyio.Event = field(default_factory=anyio.Event)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        undo = on_commit(self.outbox.name, self.wake)
        try:
            while True:
                try:
                    # A pass finishes even when the app stops meanwhile (bounded): cancelled
                    # in the middle of a query, a connection is lost under the driver's feet
                    # (asyncpg: "unexpected connection_lost()") as the pool closes.
                    sent = 0
                    with anyio.CancelScope(shield=True), anyio.move_on_after(PASS_LIMIT):
                        sent = await self.publish_pending()
                except Exception:
                    logger.exception("%s relay: publishing failed; retrying", self.source)
                    await anyio.sleep(self.retry_after)
                    continue
                if sent >= RELAY_BATCH:
                    continue
                with anyio.move_on_after(self.interval):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            undo()

    async def publish_pending(self) -> int:
        """One pass: publish up to a batch of pending rows; how many were sent."""
        query = (
            select(self.outbox)
            .where(self.outbox.c.published_at.is_(None))
            .order_by(self.outbox.c.position)
            .limit(RELAY_BATCH)
        )
        if is_sqlite(str(self.db.engine.url)):
            # One writer at a time: read, publish (in-process handlers write), then mark.
            async with self.db.reader() as session:
                rows = (await session.execute(query)).mappings().all()
            if rows:
                await self.bus.publish(self.source, self._envelopes(rows))
                async with self.db.writer() as session, session.begin():
                    await self._mark(session, rows)
            return len(rows)
        # Replicas share the outbox: each takes the rows no other relay holds.
        async with self.db.writer() as session, session.begin():
            rows = (await session.execute(query.with_for_update(skip_locked=True))).mappings().all()
            if rows:
                await self.bus.publish(self.source, self._envelopes(rows))
                await self._mark(session, rows)
        return len(rows)

    def _envelopes(self, rows: Sequence[RowMapping]) -> list[Envelope]:
        return [
            Envelope(
                id=row["event_id"],
                type=row["type"],
                version=row["version"],
                source=self.source,
                aggregate_id=row["aggregate_id"],
                sequence=row["position"],
                occurred_at=row["occurred_at"],
                payload=row["payload"],
                traceparent=row["traceparent"],
            )
            for row in rows
        ]

    async def _mark(self, session: AsyncSession, rows: Sequence[RowMapping]) -> None:
        await session.execute(
            update(self.outbox)
            .where(self.outbox.c.position.in_([row["position"] for row in rows]))
            .values(published_at=datetime.now(UTC))
        )


# --- backfilling ---------------------------------------------------------------------------

Snapshot = Callable[[AsyncSession], AsyncIterator[tuple[str, Event]]]
"""A publisher's current state: ``(aggregate_id, event)`` per aggregate, the event a consumer
would have received last about it (``StockChanged`` per stock item, ``ProductChanged`` or
``ProductDeleted`` per product), read in the given session's transaction."""


def snapshot_envelope(
    source: str, aggregate_id: str, item: Event, *, sequence: int, occurred_at: datetime
) -> Envelope:
    """The envelope of one snapshot event, at ``sequence`` (the publisher's highest outbox
    position when the snapshot was read), with an id of its own: never a recorded event's,
    which the consumer must still apply (or refuse by its sequence) when it arrives."""
    return Envelope(
        id=uuid.uuid4(),
        type=item.TYPE,
        version=item.VERSION,
        source=source,
        aggregate_id=aggregate_id,
        sequence=sequence,
        occurred_at=occurred_at,
        payload=item.model_dump(mode="json"),
    )


@asynccontextmanager
async def snapshot_session(db: Database) -> AsyncIterator[AsyncSession]:
    """A session in ONE read transaction that sees one state of ``db`` for all its queries
    (repeatable read on PostgreSQL; a SQLite read transaction is one snapshot already)."""
    async with db.reader() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # Set before the transaction's first statement.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


async def last_position(session: AsyncSession, outbox: Table) -> int:
    """The highest position of ``outbox`` this transaction sees (0 when it is empty)."""
    found = await session.scalar(select(func.max(outbox.c.position)))
    return int(found or 0)


@dataclass(frozen=True)
class Backfill:
    """What one :func:`backfill` delivered."""

    source: str
    position: int
    """The publisher's highest outbox position at the snapshot: every envelope's sequence."""
    aggregate_ids: tuple[str, ...]
    """The aggregates of the snapshot, in its order: one envelope each."""


async def backfill(
    db: Database,
    *,
    source: str,
    outbox: Table,
    snapshot: Snapshot,
    deliver: Deliver,
    progress: Callable[[int], None] | None = None,
    every: int = 500,
) -> Backfill:
    """Deliver ``source``'s snapshot (read from ``db``) to ``deliver``: a consumer's
    :func:`consumer`, so that its read model is built by the very handlers that keep it.

    The snapshot and the outbox's highest position are read in ONE read transaction
    (repeatable read on PostgreSQL), and every envelope carries that position as its
    ``sequence``: an event recorded later has a higher position and wins over the snapshot;
    one recorded before (still waiting for its relay, or in a broker's queue) is not newer,
    and loses to it. The envelopes go to ``deliver`` in batches of :data:`BACKFILL_BATCH` (or
    ``every``, if fewer).
    ``progress`` is called with the count delivered each time it passes a multiple of
    ``every``.
    """
    delivered: list[str] = []
    occurred_at = utcnow()
    batch: list[Envelope] = []

    async def flush() -> None:
        await deliver(batch)
        before = len(delivered)
        delivered.extend(envelope.aggregate_id for envelope in batch)
        batch.clear()
        if progress is not None and len(delivered) // every > before // every:
            progress(len(delivered))

    async with snapshot_session(db) as session:
        position = await last_position(session, outbox)
        async for aggregate_id, item in snapshot(session):
            batch.append(
                snapshot_envelope(
                    source, aggregate_id, item, sequence=position, occurred_at=occurred_at
                )
            )
            if len(batch) >= min(BACKFILL_BATCH, every):
                await flush()
        if batch:
            await flush()
    return Backfill(source=source, position=position, aggregate_ids=tuple(delivered))
