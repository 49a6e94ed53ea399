"""Topologies as the launcher runs them: moved to other ports and written back to TOML.

The launcher never edits ``topologies/*.toml``. It resolves the file it was given (replicas,
a port offset, the gateway's port) into a run topology, writes that to the run directory
and points every process at it through ``SHOP_TOPOLOGY``, so the services and the gateway
agree with the launcher on every address.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from launcher.processes import port_is_free
from shop.kernel.topology import Topology, TopologyError, load, parse_replicas

__all__ = [
    "all_ports",
    "free_port_offset",
    "relocate",
    "render",
    "replicas_text",
    "resolve",
    "write",
]


def relocate(topology: Topology, *, offset: int = 0, gateway_port: int | None = None) -> Topology:
    """The topology with every port moved by ``offset``; ``gateway_port`` overrides the edge's.

    Replica ``i`` still listens on ``port + i``, so a whole service moves together.
    """
    services = {
        name: replace(spec, port=spec.port + offset) for name, spec in topology.services.items()
    }
    edge = topology.gateway_port
    if gateway_port is not None:
        edge = gateway_port
    elif edge is not None:
        edge += offset
    moved = replace(topology, services=services, gateway_port=edge)
    for port in all_ports(moved):
        if not 1024 <= port <= 65535:
            raise TopologyError(f"{topology.name}: port {port} is outside 1024..65535")
    # with_replicas({}) re-runs the topology's own validation (ports used twice, ...).
    return moved.with_replicas({})


def resolve(
    path: str | Path | None,
    *,
    replicas: str = "",
    offset: int = 0,
    gateway_port: int | None = None,
) -> Topology:
    """Load a topology file (``SHOP_REPLICAS`` applies), add ``replicas``, move its ports."""
    topology = load(path)
    if replicas.strip():
        topology = topology.with_replicas(parse_replicas(replicas))
    return relocate(topology, offset=offset, gateway_port=gateway_port)


def all_ports(topology: Topology) -> list[int]:
    """Every port the topology listens on: the gateway's, then each replica's and worker's."""
    ports = [] if topology.gateway_port is None else [topology.gateway_port]
    for spec in topology.services.values():
        ports.extend(spec.ports)
        if spec.worker_port is not None:
            ports.append(spec.worker_port)
    return ports


def replicas_text(topology: Topology) -> str:
    """``SHOP_REPLICAS`` form of the topology's replica counts (``identity=1,catalog=2``)."""
    return ",".join(f"{name}={spec.replicas}" for name, spec in topology.services.items())


def _string(value: str) -> str:
    # A JSON string with ASCII escapes is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=True)


def render(topology: Topology) -> str:
    """The topology as TOML that :func:`shop.kernel.topology.load` reads back unchanged."""
    lines = [
        "# Written by the launcher for one run; edit topologies/*.toml instead.",
        f"name = {_string(topology.name)}",
        f"description = {_string(topology.description)}",
        f"bus = {_string(topology.bus)}",
    ]
    if topology.gateway_port is not None:
        lines += ["", "[gateway]", f"port = {topology.gateway_port}"]
    for name, spec in topology.services.items():
        contexts = ", ".join(_string(context) for context in spec.contexts)
        lines += [
            "",
            f"[services.{_string(name)}]",
            f"app = {_string(spec.app)}",
            f"contexts = [{contexts}]",
            f"port = {spec.port}",
            f"replicas = {spec.replicas}",
            f"consumers = {_string(spec.consumers)}",
        ]
    return "\n".join(lines) + "\n"


def write(topology: Topology, path: Path) -> Path:
    """Write the run topology to ``path`` (its folder is created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(topology), encoding="utf-8")
    return path


def free_port_offset(
    topology: Topology, *, low: int = 20_000, high: int = 60_000, attempts: int = 200
) -> int:
    """An offset that moves every port of the topology onto ports free right now.

    Tests use it so that they never collide with a developer's deployment on :8000.
    Another program may still take a port before the launcher binds it; the launcher then
    fails with the name of the process and its log.
    """
    ports = all_ports(topology)
    if not ports:
        return 0
    rng = random.SystemRandom()
    base = min(ports)
    span = max(ports) - base
    for _ in range(attempts):
        offset = rng.randrange(low, high - span) - base
        if all(port_is_free(port + offset) for port in ports):
            return offset
    raise TopologyError(f"{topology.name}: found no free ports for {len(ports)} processes")
