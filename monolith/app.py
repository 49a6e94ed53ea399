"""The monolith: ``create_app()`` builds the shop in one process, on one database.

uvicorn --factory monolith.app:create_app

On its own it serves every context, each port bound in process. In a kata step
(``SHOP_TOPOLOGY`` names a topology in which some contexts were extracted) it serves only
the contexts the topology leaves it and calls the others over HTTP: the same ports, other
bindings (``composition.app.build``). No context's code changes.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from fastapi import FastAPI

from composition.app import build, served_by
from composition.contexts import declared
from monolith.settings import MonolithSettings
from shop.kernel.events import Bus
from shop.kernel.topology import Topology, load


def served_contexts(
    settings: MonolithSettings, topology: Topology | None = None
) -> tuple[str, ...]:
    """The contexts this monolith serves: all of them, or those its kata topology gives it
    (``topology``, already loaded from ``settings.topology``, or loaded here)."""
    if settings.topology is None:
        return tuple(declared())
    return served_by(topology or load(settings.topology), settings.service_name)


def create_app(
    settings: MonolithSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
    bus: Bus | None = None,
) -> FastAPI:
    """The shop's contexts on one database (settings from the environment by default).

    ``transports`` (by service name) reaches extracted services in process, as tests do.
    """
    settings = settings or MonolithSettings()
    topology = load(settings.topology) if settings.topology is not None else None
    return build(
        settings,
        service=settings.service_name,
        served=served_contexts(settings, topology),
        database_url=settings.database_url,
        topology=topology,
        transports=transports,
        bus=bus,
    )
