"""A service: ``create_app()`` builds one service of the topology, on its own database.

uvicorn --factory services.app:create_app        (SHOP_SERVICE=catalog; or python -m services)
uvicorn --factory services.app:create_worker     (its consumers' worker, if the topology has one)

Which contexts it serves comes from the topology (``SHOP_TOPOLOGY``); what each of them
mounts, needs and starts from its declaration (``shop/<context>/context.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from fastapi import FastAPI

from composition.app import CompositionError, build, served_by
from services.settings import ServiceSettings
from shop.kernel.events import Bus
from shop.kernel.topology import load


def create_app(
    settings: ServiceSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
    bus: Bus | None = None,
) -> FastAPI:
    """The service named ``SHOP_SERVICE`` (``settings.service_name``) of the topology."""
    return _build(settings, transports=transports, bus=bus, worker=False)


def create_worker(
    settings: ServiceSettings | None = None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
    bus: Bus | None = None,
) -> FastAPI:
    """The consumers' worker of the service named ``SHOP_SERVICE``: its contexts' event
    consumers in a process of their own (the topology says ``consumers = "worker"``), away
    from the event loop that answers its requests. It answers only health checks."""
    return _build(settings, transports=transports, bus=bus, worker=True)


def _build(
    settings: ServiceSettings | None,
    *,
    transports: Mapping[str, httpx2.AsyncBaseTransport] | None,
    bus: Bus | None,
    worker: bool,
) -> FastAPI:
    settings = settings or ServiceSettings()
    name = settings.service_name
    if not name:
        raise CompositionError(
            "SHOP_SERVICE is not set: a service process must know which service of the"
            " topology it is (python -m services serve <service> sets it)"
        )
    topology = load(settings.topology)
    return build(
        settings,
        service=name,
        served=served_by(topology, name),
        database_url=settings.database_for(name),
        topology=topology,
        transports=transports,
        bus=bus,
        worker=worker,
    )
