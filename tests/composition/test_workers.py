"""A service may consume its integration events in a process of its own: its worker.

``consumers = "worker"`` in a service's topology entry: ``<service>-worker`` subscribes its
contexts to the broker and answers only health checks, on the port past its replicas'; the
service's own processes then answer requests and relay their outbox, and subscribe nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest

from composition.app import CompositionError
from launcher import Launcher, topologies
from services.app import create_app, create_worker
from shop.identity.tokens import generate_private_key_pem
from shop.kernel.events import Deliver, InProcessBus
from shop.kernel.topology import MAX_REPLICAS, TopologyError, load, parse
from tests import support, targets

pytestmark = pytest.mark.anyio

SHIPPED = Path(__file__).resolve().parents[2] / "topologies" / "services.toml"


def _topology(**catalog: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "bus": "rabbitmq",
        "services": {
            "catalog": {"contexts": ["catalog"], "port": 8120, **catalog},
            "inventory": {"contexts": ["inventory"], "port": 8130},
        },
    }


def test_a_worker_listens_past_the_ports_its_replicas_may_take() -> None:
    topology = parse(_topology(consumers="worker"))
    catalog = topology.services["catalog"]
    assert catalog.worker_port == 8120 + MAX_REPLICAS
    assert topology.services["inventory"].worker_port is None
    most = topology.with_replicas({"catalog": MAX_REPLICAS}).services["catalog"]
    assert most.worker_port not in most.ports


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"consumers": "thread"}, "consumers must be one of"),
        (
            {"consumers": "worker", "port": 8121},
            r"port 8130 of inventory is catalog-worker \(port \+ 9\)'s",
        ),
        ({"consumers": "worker", "app": "monolith.app:create_app"}, "only a service built"),
    ],
)
def test_a_worker_that_cannot_run_is_refused_with_the_reason(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(TopologyError, match=reason):
        parse(_topology(**changes))


def test_a_worker_needs_a_bus_between_processes() -> None:
    data = {**_topology(consumers="worker"), "bus": "in-process"}
    with pytest.raises(TopologyError, match="bus is in-process"):
        parse(data)


def test_the_run_topology_moves_the_worker_with_its_service(tmp_path: Path) -> None:
    moved = topologies.relocate(parse(_topology(consumers="worker")), offset=1000)
    assert moved.services["catalog"].worker_port == 9120 + MAX_REPLICAS
    assert 9120 + MAX_REPLICAS in topologies.all_ports(moved)
    again = load(topologies.write(moved, tmp_path / "topology.toml"))
    assert again.services["catalog"].consumers == "worker"
    assert again.services["catalog"].worker_port == 9120 + MAX_REPLICAS


def test_the_launcher_runs_the_worker_beside_its_service_not_among_its_urls(
    tmp_path: Path,
) -> None:
    topology = load(SHIPPED)
    launcher = Launcher(
        topology,
        databases={name: f"sqlite+aiosqlite:///{tmp_path}/{name}.db" for name in topology.services},
        run_dir=tmp_path / "run",
        progress=lambda _: None,
    )
    workers = {info.name: info for info in launcher.processes() if info.name.endswith("-worker")}
    assert set(workers) == {"catalog-worker", "cart-worker"}
    catalog = topology.services["catalog"]
    assert workers["catalog-worker"].service == "catalog"
    assert workers["catalog-worker"].port == catalog.worker_port
    assert launcher.urls["catalog"] == catalog.urls()


class RecordingBus(InProcessBus):
    """The in-process bus, remembering who subscribed."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribed: list[str] = []

    async def subscribe(self, consumer: str, types: Sequence[str], deliver: Deliver) -> None:
        self.subscribed.append(consumer)
        await super().subscribe(consumer, types, deliver)


async def test_the_worker_consumes_and_its_service_answers(tmp_path: Path) -> None:
    topology = load(SHIPPED)
    async with support.scratch_database(tmp_path) as url:
        await support.migrate(url, ["catalog"])
        settings = targets._settings(topology, "catalog", url, generate_private_key_pem())
        bus = RecordingBus()
        service = create_app(settings, transports={}, bus=bus)
        worker = create_worker(settings, transports={}, bus=bus)
        async with service.router.lifespan_context(service):
            assert bus.subscribed == [], "the service subscribed although it has a worker"
            async with worker.router.lifespan_context(worker):
                assert bus.subscribed == ["catalog"]
                transport = httpx2.ASGITransport(app=worker)
                async with httpx2.AsyncClient(transport=transport, base_url="http://w") as client:
                    assert (await client.get("/readyz")).status_code == 200
                    # No routes of its contexts, no API to document: requests go to the
                    # service.
                    for path in ("/products", "/docs", "/openapi.json"):
                        missing = await client.get(path)
                        assert missing.status_code == 404, path
                        assert missing.headers["content-type"] == "application/problem+json"


async def test_a_worker_of_a_service_without_one_is_refused(tmp_path: Path) -> None:
    topology = load(SHIPPED)
    async with support.scratch_database(tmp_path) as url:
        settings = targets._settings(topology, "inventory", url, generate_private_key_pem())
        with pytest.raises(CompositionError, match="has no worker"):
            create_worker(settings, transports={}, bus=InProcessBus())


async def test_a_worker_for_contexts_that_subscribe_to_nothing_is_refused(tmp_path: Path) -> None:
    shipped = load(SHIPPED)
    inventory = shipped.services["inventory"]
    moved = dataclasses.replace(
        shipped,
        services={
            **shipped.services,
            "inventory": dataclasses.replace(inventory, consumers="worker"),
        },
    )
    topology = load(topologies.write(moved, tmp_path / "topology.toml"))
    async with support.scratch_database(tmp_path) as url:
        settings = targets._settings(topology, "inventory", url, generate_private_key_pem())
        with pytest.raises(CompositionError, match="none of its contexts"):
            create_worker(settings, transports={}, bus=InProcessBus())
