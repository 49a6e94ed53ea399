"""Building a read model from its provider's past (a backfill), verified.

A read model fills from its provider's events. One that starts after the provider has a past
(kata step 7: catalog's ``catalog_stock_levels`` of inventory, the cart's ``cart_products``
of catalog) would only learn about the aggregates that change again: a product whose stock
never moves would be asked of inventory over HTTP for ever.

:func:`backfill` builds it from the provider's ``Context.snapshot`` (every aggregate's
current state, as the event a consumer would have received last), read in one transaction
of the provider's database and delivered through the consumer's own handlers with its inbox
(:func:`shop.kernel.events.backfill`): the very code that keeps the model builds it. Each
envelope's ``sequence`` is the provider's highest outbox position at the snapshot, so a later
event wins and an older one still waiting to be delivered loses.

Then :func:`verify` asks the consumer's read model (with no provider behind it) and the
provider's in-process binding the same question for every aggregate of the snapshot; any
difference is an error naming the first ids that differ. A model that answers as its
provider does already is left as it is: a second backfill changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, func, select
from starlette.datastructures import State

from bindings.registry import BINDINGS
from composition.contexts import CompositionError, declared
from shop.cart.ports import ProductCatalog
from shop.catalog.ports import StockLevels
from shop.kernel.db import Database
from shop.kernel.events import Handler, Snapshot, snapshot_session
from shop.kernel.events import backfill as deliver_snapshot
from shop.kernel.events import consumer as inbox_consumer
from shop.kernel.topology import Topology

__all__ = [
    "BackfillError",
    "Backfilled",
    "Feed",
    "backfill",
    "feed",
    "feeds",
    "snapshot_ids",
    "verify",
]

CHUNK = 500
"""Aggregates asked of both sides per verification query."""
SHOWN = 5
"""Differing aggregates an error names."""

Progress = Callable[[str], None]
Ask = Callable[[Any, Sequence[str]], Awaitable[Mapping[str, object]]]


async def _ask_stock(port: StockLevels, ids: Sequence[str]) -> Mapping[str, object]:
    answer = await port.available([int(item) for item in ids])
    return {str(key): value for key, value in answer.items()}


async def _ask_catalog(port: ProductCatalog, ids: Sequence[str]) -> Mapping[str, object]:
    answer = await port.entries([int(item) for item in ids])
    return {str(key): value for key, value in answer.items()}


ASKS: dict[type[Any], Ask] = {StockLevels: _ask_stock, ProductCatalog: _ask_catalog}
"""How to ask a port that a read model answers about some aggregates (by their ids), so that
the model's answer can be compared with the provider's."""


class BackfillError(RuntimeError):
    """A read model does not answer as its provider does after a backfill."""


@dataclass(frozen=True)
class Feed:
    """A read model of ``consumer``'s kept from ``provider``'s events, answering ``ports``."""

    provider: str
    consumer: str
    ports: tuple[type[Any], ...]

    @property
    def label(self) -> str:
        return f"{self.consumer} <- {self.provider}"


def feed(provider: str, consumer: str) -> Feed:
    """The read model ``consumer`` keeps of ``provider``; a composition error if none."""
    contexts = declared()
    for name in (provider, consumer):
        if name not in contexts:
            raise CompositionError(f"unknown context {name!r}; known: {sorted(contexts)}")
    ports = tuple(
        port
        for port in contexts[consumer].read_models
        if port in BINDINGS and BINDINGS[port].provider == provider
    )
    if not ports:
        raise CompositionError(f"{consumer} keeps no read model of {provider}")
    return Feed(provider, consumer, ports)


def feeds(topology: Topology) -> list[Feed]:
    """The read models ``topology`` reads: wherever a broker carries the events and the
    provider runs in another service, as :func:`composition.app.build` binds the ports."""
    if topology.bus == "in-process":
        return []
    owners = {name: spec.name for spec in topology.services.values() for name in spec.contexts}
    found: dict[tuple[str, str], list[type[Any]]] = {}
    for context in declared().values():
        for port in context.read_models:
            binding = BINDINGS.get(port)
            if binding is None or context.name not in owners or binding.provider not in owners:
                continue
            if owners[binding.provider] != owners[context.name]:
                found.setdefault((binding.provider, context.name), []).append(port)
    return [Feed(provider, consumer, tuple(ports)) for (provider, consumer), ports in found.items()]


@dataclass(frozen=True)
class Backfilled:
    """What one :func:`backfill` did."""

    feed: Feed
    aggregates: int
    """The aggregates of the provider's snapshot (each one verified)."""
    delivered: int
    """Snapshot events delivered (0: the model answered as the provider already)."""
    applied: int
    """Of those, the ones new to the consumer's inbox (its handler ran; the model's row
    changed unless it held a newer event's state)."""
    position: int | None
    """The provider's highest outbox position, every envelope's sequence (None: nothing
    delivered)."""


@dataclass(frozen=True)
class _Ends:
    """What a backfill takes from the provider's and the consumer's declarations."""

    outbox: Table
    snapshot: Snapshot
    inbox: Table
    handlers: Mapping[str, Handler]
    read_models: Mapping[type[Any], Callable[[Database, Any], Any]]


def _ends(item: Feed) -> _Ends:
    publisher, subscriber = declared()[item.provider], declared()[item.consumer]
    if publisher.outbox is None or publisher.snapshot is None:
        raise CompositionError(f"{publisher.name} declares no outbox and snapshot to backfill from")
    if subscriber.inbox is None or not subscriber.subscriptions:
        raise CompositionError(f"{subscriber.name} declares no inbox and subscriptions")
    return _Ends(
        outbox=publisher.outbox,
        snapshot=publisher.snapshot,
        inbox=subscriber.inbox,
        handlers={each.type: each.handler for each in subscriber.subscriptions},
        read_models=subscriber.read_models,
    )


async def snapshot_ids(item: Feed, source: Database) -> list[str]:
    """The aggregates of the provider's snapshot, read in one transaction of ``source``."""
    snapshot = _ends(item).snapshot
    async with snapshot_session(source) as session:
        return [aggregate_id async for aggregate_id, _event in snapshot(session)]


async def _inbox_rows(inbox: Table, target: Database) -> int:
    async with target.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(inbox)) or 0)


async def backfill(
    item: Feed,
    *,
    source: Database,
    target: Database,
    progress: Progress = print,
    every: int = 1000,
) -> Backfilled:
    """Build ``item.consumer``'s read model in ``target`` from ``item.provider``'s snapshot in
    ``source``, then verify it (:class:`BackfillError` if it does not answer as the provider).

    A model that answers as its provider does already is left untouched. ``progress`` gets a
    line every ``every`` events and aggregates verified, and a summary.
    """
    ends = _ends(item)
    ids = await snapshot_ids(item, source)
    if not await verify(item, source=source, target=target, ids=ids, first_only=True):
        progress(
            f"{item.label}: the read model answers as {item.provider} does for all"
            f" {len(ids)} of its aggregates already: nothing to deliver"
        )
        return Backfilled(item, len(ids), 0, 0, None)
    before = await _inbox_rows(ends.inbox, target)
    progress(f"{item.label}: delivering {item.provider}'s snapshot ({len(ids)} aggregates)")
    done = await deliver_snapshot(
        source,
        source=item.provider,
        outbox=ends.outbox,
        snapshot=ends.snapshot,
        deliver=inbox_consumer(target, ends.inbox, ends.handlers),
        progress=lambda count: progress(f"{item.label}: {count} events delivered"),
        every=every,
    )
    applied = await _inbox_rows(ends.inbox, target) - before
    count = len(done.aggregate_ids)
    progress(
        f"{item.label}: {count} events delivered at sequence {done.position}"
        f" ({item.provider}'s last outbox position), {applied} new to {item.consumer}'s inbox"
    )
    await verify(item, source=source, target=target, ids=done.aggregate_ids, progress=progress)
    return Backfilled(item, count, count, applied, done.position)


@dataclass
class _Unseen:
    """The provider behind a read model under verification: it answers nothing and notes
    what it was asked, which is what the model has no row for."""

    asked: set[str] = field(default_factory=set)

    def __getattr__(self, name: str) -> Callable[[Collection[int]], Awaitable[dict[int, Any]]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def ask(ids: Collection[int]) -> dict[int, Any]:
            self.asked.update(str(item) for item in ids)
            return {}

        return ask


async def verify(
    item: Feed,
    *,
    source: Database,
    target: Database,
    ids: Sequence[str],
    progress: Progress | None = None,
    every: int = 1000,
    first_only: bool = False,
) -> list[str]:
    """Ask the consumer's read model (in ``target``, with no provider behind it) and the
    provider's in-process binding (on ``source``) about every aggregate of ``ids``, port by
    port; :class:`BackfillError` naming the first differing ids if any answer differs.

    ``first_only``: return the differences found by the first chunk that has any instead of
    raising (an empty list: none at all), to learn cheaply whether a backfill is needed.
    """
    read_models = _ends(item).read_models
    problems: list[str] = []
    for port in item.ports:
        ask = ASKS.get(port)
        if ask is None:
            raise CompositionError(
                f"{port.__module__}.{port.__qualname__}: composition/backfill.py has no way to"
                " ask it (ASKS) to verify the read model that answers it"
            )
        unseen = _Unseen()
        model = read_models[port](target, unseen)
        truth = BINDINGS[port].local(source, State())
        missing: list[str] = []
        differing: list[str] = []
        checked = 0
        report = every
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            got = await ask(model, chunk)
            want = await ask(truth, chunk)
            for key in chunk:
                if key in unseen.asked:
                    missing.append(key)
                elif got.get(key) != want.get(key):
                    differing.append(
                        f"{key} (read model: {_shown(got.get(key))},"
                        f" {item.provider}: {_shown(want.get(key))})"
                    )
            checked += len(chunk)
            if first_only and (missing or differing):
                return missing + differing
            if progress is not None and report <= checked < len(ids):
                progress(f"{item.label}: {checked} of {len(ids)} verified ({port.__name__})")
                report += every
        if missing:
            problems.append(
                f"{len(missing)} {_plural(len(missing))} it has no row for: {_first(missing)}"
            )
        if differing:
            problems.append(
                f"{len(differing)} {_plural(len(differing))} answered differently:"
                f" {_first(differing)}"
            )
        if problems and not first_only:
            raise BackfillError(
                f"{item.label}: {item.consumer}'s read model ({port.__name__}) does not answer"
                f" as {item.provider} does, of {len(ids)} aggregates: {'; '.join(problems)}."
                f" The model's rows are a cache of {item.provider}'s: if they were written by"
                f" hand, delete them and backfill again."
            )
        if progress is not None:
            progress(
                f"{item.label}: verified: the read model answers as {item.provider} does"
                f" ({port.__name__}) for all {len(ids)} aggregates"
            )
    return problems


def _plural(count: int) -> str:
    return "aggregate" if count == 1 else "aggregates"


def _first(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown if len(items) <= SHOWN else f"{shown}, ... (the first {SHOWN})"


def _shown(value: object) -> str:
    if value is None:
        return "none"
    return repr(value)
