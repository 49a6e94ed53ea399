"""Topologies as data: which service serves which contexts, and where.

A topology file (``topologies/*.toml``) is the single description of a deployment that the
launcher, the gateway and every service read. Replica ``i`` of a service listens on
``port + i``. It never says which paths go where: each context declares its public prefixes
(``shop/<context>/context.py``) and the gateway's table is derived from those and the
topology (``composition.routes``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_TOPOLOGY = Path("topologies/services.toml")
MAX_REPLICAS = 9
HOST = "127.0.0.1"
BUSES = frozenset({"in-process", "rabbitmq"})
CONSUMERS = frozenset({"in-service", "worker"})
"""Where a service's event consumers run: in its serving processes (``in-service``), or in a
process of their own beside them (``worker``, listening on ``port + MAX_REPLICAS``)."""
SERVICE_APP = "services.app:create_app"
"""The app of a service that names none: built from its contexts' declarations."""


class TopologyError(ValueError):
    """The topology file is not usable; the message says where and why."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    app: str
    contexts: tuple[str, ...]
    port: int
    replicas: int = 1
    host: str | None = None
    """Where the service is reached, when not on the caller's ``host`` (a container's name)."""
    consumers: str = "in-service"
    """Where its event consumers run (:data:`CONSUMERS`)."""

    @property
    def ports(self) -> list[int]:
        return [self.port + index for index in range(self.replicas)]

    @property
    def has_worker(self) -> bool:
        """Whether its event consumers run in a worker of their own."""
        return self.consumers == "worker"

    @property
    def worker_port(self) -> int | None:
        """Where its consumers' worker answers health checks; None without a worker. Past
        the ports its replicas may ever take."""
        return self.port + MAX_REPLICAS if self.has_worker else None

    def urls(self, host: str = HOST) -> list[str]:
        """Each replica's base URL: on the service's own ``host`` if it has one, else ``host``."""
        return [f"http://{self.host or host}:{port}" for port in self.ports]


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    gateway_port: int | None
    services: dict[str, ServiceSpec]
    source: Path | None = None
    bus: str = "in-process"
    """How integration events travel: ``in-process`` (to the consumers in the same process)
    or ``rabbitmq`` (through the broker, between every service)."""

    def owner(self, context: str) -> ServiceSpec:
        """The service that serves a bounded context."""
        for spec in self.services.values():
            if context in spec.contexts:
                return spec
        raise TopologyError(f"{self.name}: no service serves the {context} context")

    def with_replicas(self, replicas: Mapping[str, int]) -> Topology:
        """The same topology with some services replicated (``{"catalog": 2}``)."""
        services = dict(self.services)
        for name, count in replicas.items():
            if name not in services:
                raise TopologyError(f"{self.name}: no service named {name!r} to replicate")
            services[name] = replace(services[name], replicas=count)
        return _validated(replace(self, services=services))


def parse_replicas(text: str) -> dict[str, int]:
    """``"catalog=2,orders=3"`` -> ``{"catalog": 2, "orders": 3}``."""
    result: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.replace(" ", ",").split(","))):
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise TopologyError(f"replicas must look like name=count, got {item!r}")
        result[name] = int(count)
    return result


def _validated(topology: Topology) -> Topology:
    where = topology.name
    seen_ports: dict[int, str] = {}
    if topology.gateway_port is not None:
        seen_ports[topology.gateway_port] = "gateway"
    if topology.bus not in BUSES:
        raise TopologyError(f"{where}: bus must be one of {sorted(BUSES)}, got {topology.bus!r}")
    owners: dict[str, str] = {}
    for spec in topology.services.values():
        if not 1 <= spec.replicas <= MAX_REPLICAS:
            raise TopologyError(f"{where}: {spec.name} replicas must be 1..{MAX_REPLICAS}")
        if spec.consumers not in CONSUMERS:
            raise TopologyError(
                f"{where}: {spec.name} consumers must be one of {sorted(CONSUMERS)},"
                f" got {spec.consumers!r}"
            )
        if spec.has_worker and topology.bus == "in-process":
            raise TopologyError(
                f"{where}: {spec.name} runs its consumers in a worker, but the bus is in-process:"
                " an in-process bus hands events to the consumers of the process that recorded"
                ' them (a worker needs bus = "rabbitmq")'
            )
        if spec.has_worker and spec.app != SERVICE_APP:
            raise TopologyError(
                f"{where}: {spec.name} runs {spec.app}; only a service built from its contexts"
                f" ({SERVICE_APP}) has a worker"
            )
        owned = [(port, spec.name) for port in spec.ports]
        if spec.worker_port is not None:
            owned.append((spec.worker_port, f"{spec.name}-worker (port + {MAX_REPLICAS})"))
        for port, owner in owned:
            if port in seen_ports:
                raise TopologyError(f"{where}: port {port} of {owner} is {seen_ports[port]}'s")
            seen_ports[port] = owner
        for context in spec.contexts:
            if context in owners:
                raise TopologyError(
                    f"{where}: {context} is served by both {owners[context]} and {spec.name}"
                )
            owners[context] = spec.name
    return topology


def parse(data: Mapping[str, Any], *, source: Path | None = None) -> Topology:
    try:
        services = {
            name: ServiceSpec(
                name=name,
                app=str(spec.get("app", SERVICE_APP)),
                contexts=tuple(spec.get("contexts", ())),
                port=int(spec["port"]),
                replicas=int(spec.get("replicas", 1)),
                host=str(spec["host"]) if spec.get("host") else None,
                consumers=str(spec.get("consumers", "in-service")),
            )
            for name, spec in data.get("services", {}).items()
        }
        if "routes" in data:
            raise TopologyError(
                f"{source or 'topology'}: a topology says which service serves which contexts,"
                " not which paths go where: remove its [routes] table (the gateway routes each"
                " context's declared prefixes, shop/<context>/context.py, to its service)"
            )
        gateway = data.get("gateway")
        topology = Topology(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            gateway_port=int(gateway["port"]) if gateway else None,
            services=services,
            source=source,
            bus=str(data.get("bus", "in-process")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TopologyError(f"{source or 'topology'}: {exc!r}") from exc
    return _validated(topology)


def load(path: str | Path | None = None) -> Topology:
    """Read a topology file (default: ``SHOP_TOPOLOGY`` or topologies/services.toml).

    ``SHOP_REPLICAS`` (``catalog=2``) replicates services on top of the file.
    """
    source = Path(path or os.environ.get("SHOP_TOPOLOGY") or DEFAULT_TOPOLOGY)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TopologyError(f"cannot read topology {source}: {exc}") from exc
    topology = parse(data, source=source)
    replicas = os.environ.get("SHOP_REPLICAS", "").strip()
    return topology.with_replicas(parse_replicas(replicas)) if replicas else topology
