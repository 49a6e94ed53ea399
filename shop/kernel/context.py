"""A bounded context declared once: what it serves, what it needs, what it starts.

Each context has a ``context.py`` with one :class:`Context`. The composition root
(``composition/``) reads the declarations and the topology and builds any deployable from
them: the monolith (every context, one database), a service (one context, its own database),
a kata step's monolith (what is left), and the gateway's route table (each context's public
prefixes, sent to whichever service serves it). Nothing else lists the contexts.

A context's migration stream follows from its name (``shop/<name>/migrations/versions``,
table ``<name>_alembic_version``: :mod:`shop.kernel.migrations`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import anyio.abc
from fastapi import APIRouter
from pydantic_settings import BaseSettings
from sqlalchemy import Table
from starlette.datastructures import State

from shop.kernel.db import Database
from shop.kernel.events import Snapshot, Subscription
from shop.kernel.security import JwksSource

P = TypeVar("P")
S = TypeVar("S", bound=BaseSettings)


class SettingsSource:
    """Each context's settings in one deployable: given ones first, else from the environment.

    A context's settings class reads its own prefix (``ORDERS_``, ``PAYMENTS_``...) from the
    environment; tests hand in instances instead (:meth:`with_given`).
    """

    def __init__(self, given: tuple[BaseSettings, ...] = ()) -> None:
        self._given: dict[type[BaseSettings], BaseSettings] = {type(item): item for item in given}
        self._read: dict[type[BaseSettings], BaseSettings] = {}

    def __call__(self, kind: type[S]) -> S:
        found = self._given.get(kind) or self._read.get(kind)
        if found is None:
            found = self._read[kind] = kind()
        return cast(S, found)

    def with_given(self, *items: BaseSettings) -> SettingsSource:
        return SettingsSource((*self._given.values(), *items))


@dataclass
class Runtime:
    """The live pieces of one deployable, handed to each served context's hooks."""

    service: str
    """The topology's name for this process (``monolith``, ``orders``...)."""
    db: Database
    state: State
    """The app's state, where request dependencies find what a hook put there."""
    settings: SettingsSource
    ports: dict[type[Any], Any]
    """Every port the served contexts need, bound in process or over HTTP before ``run``."""
    tasks: anyio.abc.TaskGroup
    stack: AsyncExitStack
    """Closes what a hook opened, when the app stops."""
    background: bool
    """Whether background work (a checkout's recovery) runs in this process."""
    jwks: JwksSource | None = None
    """The token keys, when a served context publishes them (identity)."""

    def port(self, kind: type[P]) -> P:
        return cast(P, self.ports[kind])


Hook = Callable[[Runtime], Awaitable[None]]


@dataclass(frozen=True)
class Context:
    """One bounded context, as every deployable and the gateway see it."""

    name: str
    router: APIRouter
    """Its public API, mounted unchanged wherever it is served."""
    prefixes: tuple[str, ...]
    """The public path prefixes it owns: the gateway sends them to whoever serves it."""
    internal_router: APIRouter | None = None
    """What it provides to other contexts over HTTP (mounted where some caller is remote)."""
    needs: tuple[type[Any], ...] = ()
    """The ports (its own ``ports.py``) the deployable must bind before ``run``."""
    start: Hook | None = None
    """Puts its runtime pieces in place (app state, keys), before any port is bound."""
    run: Hook | None = None
    """Background work, once every port is bound (started in ``Runtime.tasks``)."""
    call_floor: Callable[[SettingsSource], float] = field(default=lambda _: 0.0)
    """The least read timeout a caller in another process must give its calls (seconds)."""
    outbox: Table | None = None
    """Where it records the integration events it publishes (``<name>_outbox``): a relay
    publishes them on the deployment's bus wherever the context is served."""
    snapshot: Snapshot | None = None
    """Its current state as the events it publishes, one per aggregate (what a consumer would
    have received last about each): a read model that starts after the context has a past is
    built from it (a backfill, :func:`shop.kernel.events.backfill`). With ``outbox`` only."""
    inbox: Table | None = None
    """Where it remembers the events it has applied (``<name>_inbox``), once each."""
    subscriptions: tuple[Subscription, ...] = ()
    """The events it consumes, each with its handler (applied with the inbox row)."""
    read_models: Mapping[type[Any], Callable[[Database, Any], Any]] = field(default_factory=dict)
    """Ports it can answer from its own read model, kept by its subscriptions: bound instead
    of the HTTP adapter when the provider runs elsewhere and a broker carries the events.
    The factory gets the database and that HTTP adapter, for what the model has not seen."""
