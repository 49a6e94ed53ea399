"""Every process the native launcher (or `make up-monolith`) starts has a compose service
with the same command, port and environment variable names; the only differences are the
ones a container needs (``python`` of the image, listening on 0.0.0.0, PostgreSQL). A
topology whose bus is RabbitMQ has its broker in compose, and every service waits for it."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from launcher.core import GATEWAY, Launcher
from launcher.databases import database_name, postgres_urls
from shop.kernel.topology import HOST, Topology, load
from tests.containers.support import BROKER, ROOT, SECRETS, services

# topology file -> (its compose twin, the compose service of its gateway)
TOPOLOGIES = {
    "topologies/services.toml": ("docker/topology-services.toml", "gateway"),
    "topologies/gateway-monolith.toml": ("docker/topology-gateway-monolith.toml", "kata-gateway"),
}
SERVER = "postgresql://shopkata@postgres:5432/postgres"


def _launcher(path: str, tmp_path: Path) -> Launcher:
    topology = load(ROOT / path)
    return Launcher(
        topology,
        databases=postgres_urls(topology, SERVER),
        run_dir=tmp_path,
        env={},
        python="python",
        progress=lambda _: None,
    )


def _in_container(command: list[str]) -> list[str]:
    return ["0.0.0.0" if part == HOST else part for part in command]  # noqa: S104


def _without_hosts(topology: Topology) -> Topology:
    specs = {name: replace(spec, host=None) for name, spec in topology.services.items()}
    return replace(topology, services=specs, source=None)


@pytest.mark.parametrize("path", sorted(TOPOLOGIES))
def test_compose_topology_is_the_native_one_plus_hosts(path: str) -> None:
    native = load(ROOT / path)
    twin = load(ROOT / TOPOLOGIES[path][0])
    assert twin.bus == native.bus, f"{TOPOLOGIES[path][0]} carries its events otherwise"
    assert _without_hosts(twin) == replace(native, source=None)
    every = services()
    for name, spec in twin.services.items():
        assert spec.host in every, f"{name}: host {spec.host} is no compose service"
        assert spec.urls() == [f"http://{spec.host}:{spec.port}"]
        # The gateway asks with its default upstream_host, and still gets the container.
        assert spec.urls("127.0.0.1") == spec.urls()


@pytest.mark.parametrize("path", sorted(TOPOLOGIES))
def test_each_service_runs_as_the_launcher_runs_it(path: str, tmp_path: Path) -> None:
    launcher = _launcher(path, tmp_path)
    twin_file, _ = TOPOLOGIES[path]
    twin = load(ROOT / twin_file)
    every = services()
    for name, spec in launcher.topology.services.items():
        host = twin.services[name].host
        assert host is not None
        app = every[host]
        for proc in launcher._plan.services[name]:
            # A consumers' worker is a compose service of its own, beside its service's.
            runs = every[f"{host}-worker"] if proc.worker else app
            assert runs["command"] == _in_container(launcher._serve_command(proc))
            assert str(proc.port) in runs["expose"]
            assert runs["environment"] == app["environment"]
        env = app["environment"]
        assert set(launcher._service_env(name)) <= set(env)
        assert env["SHOP_TOPOLOGY"] == twin_file
        assert env["SHOP_REPLICAS"] == ""
        assert env["DATABASE_URL"].endswith("/" + database_name(launcher.topology, name))
        assert int(app["deploy"]["replicas"]) == 1
        migrate = every[f"{host}-migrate"]
        assert migrate["command"] == launcher._migrate_command(spec)
        assert set(launcher._service_env(name)) <= set(migrate["environment"])
        assert migrate["environment"]["DATABASE_URL"] == env["DATABASE_URL"]


@pytest.mark.parametrize("path", sorted(TOPOLOGIES))
def test_the_gateway_runs_as_the_launcher_runs_it(path: str, tmp_path: Path) -> None:
    launcher = _launcher(path, tmp_path)
    twin_file, compose_name = TOPOLOGIES[path]
    gateway = services()[compose_name]
    proc = launcher._plan.gateway
    assert proc is not None
    assert proc.service == GATEWAY
    assert gateway["command"] == _in_container(launcher._serve_command(proc))
    assert gateway["ports"] == [f"127.0.0.1:{proc.port}:{proc.port}"]
    env = gateway["environment"]
    assert set(env) == set(launcher._gateway_env())
    assert env["SHOP_TOPOLOGY"] == twin_file
    assert "DATABASE_URL" not in env
    assert "SHOP_INTERNAL_TOKEN" not in env
    twin = load(ROOT / twin_file)
    for spec in twin.services.values():
        assert gateway["depends_on"][spec.host]["condition"] == "service_healthy"


@pytest.mark.parametrize("user", [None, "events"], ids=["default-user", "own-user"])
@pytest.mark.parametrize("path", sorted(TOPOLOGIES))
def test_a_brokered_topology_waits_for_its_broker(path: str, user: str | None) -> None:
    """bus = "rabbitmq": every service of the topology gets SHOP_BROKER_URL with the broker's
    own user and password, and starts once the broker is healthy; the gateway, which serves
    no context, has neither. An in-process bus: no broker in that profile at all."""
    twin_file, gateway_name = TOPOLOGIES[path]
    twin = load(ROOT / twin_file)
    every = services({"RABBITMQ_USER": user} if user else {})
    gateway = every[gateway_name]
    assert "SHOP_BROKER_URL" not in gateway["environment"]
    assert BROKER not in gateway.get("depends_on", {})
    hosts = [spec.host or "" for spec in twin.services.values()]
    assert all(hosts), f"{twin_file}: every service names its compose host"
    if twin.bus != "rabbitmq":
        assert twin.bus == "in-process"
        for host in hosts:
            assert "SHOP_BROKER_URL" not in every[host]["environment"], host
            assert BROKER not in every[host].get("depends_on", {}), host
            assert not set(every[host]["profiles"]) & set(every[BROKER]["profiles"]), host
        return
    broker = every[BROKER]
    credentials = broker["environment"]
    assert credentials["RABBITMQ_DEFAULT_USER"] == (user or "shopkata")
    assert credentials["RABBITMQ_DEFAULT_PASS"] == SECRETS["RABBITMQ_PASSWORD"]
    for host in hosts:
        app = every[host]
        assert set(app["profiles"]) <= set(broker["profiles"]), host
        assert app["depends_on"][BROKER] == {"condition": "service_healthy"}, host
        url = urlsplit(app["environment"]["SHOP_BROKER_URL"])
        assert (url.scheme, url.hostname, url.port, url.path) == ("amqp", BROKER, 5672, "/")
        assert url.username == credentials["RABBITMQ_DEFAULT_USER"], host
        assert url.password == credentials["RABBITMQ_DEFAULT_PASS"], host
        # Its migration job shares the service's environment, broker URL included.
        migrate = every[f"{host}-migrate"]["environment"]
        assert migrate["SHOP_BROKER_URL"] == app["environment"]["SHOP_BROKER_URL"]


def test_the_monolith_has_no_broker() -> None:
    every = services()
    for name in ("monolith", "monolith-migrate", "monolith-seed"):
        assert "SHOP_BROKER_URL" not in every[name]["environment"], name
        assert BROKER not in every[name].get("depends_on", {}), name
    assert "monolith" not in every[BROKER]["profiles"]


def test_replicas_come_from_the_environment() -> None:
    scaled = services({"CATALOG_REPLICAS": "3", "MONOLITH_REPLICAS": "2", "LOCUST_WORKERS": "5"})
    assert scaled["catalog"]["deploy"]["replicas"] == "3"
    assert scaled["orders"]["deploy"]["replicas"] == "1"
    assert scaled["kata-monolith"]["deploy"]["replicas"] == "2"
    assert scaled["locust-worker"]["deploy"]["replicas"] == "5"


def _make_command(target: str, module: str) -> list[str]:
    """The ``$(BIN)/python -m <module> ...`` line of a Makefile target, variables filled."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    defaults = dict(re.findall(r"^([A-Z_]+) \?= (\S+)$", text, flags=re.MULTILINE))
    defaults["HOST"] = "0.0.0.0"  # noqa: S104 (inside a container)
    recipe = text.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
    line = next(line for line in recipe.splitlines() if f"-m {module}" in line)
    words = line.split("$(BIN)/python", 1)[1].split()
    return ["python", *(re.sub(r"\$\((\w+)\)", lambda m: defaults[m[1]], w) for w in words)]


def test_the_monolith_runs_as_make_up_monolith_runs_it() -> None:
    every = services()
    assert every["monolith"]["command"] == _make_command("up-monolith", "monolith serve")
    assert every["monolith-migrate"]["command"] == _make_command("migrate", "monolith migrate")
    assert every["monolith-seed"]["command"] == _make_command("seed", "monolith seed")
    assert every["keygen"]["command"] == _make_command("keys", "monolith keygen")
    exported = set(re.findall(r"^export (IDENTITY_\w+)", (ROOT / "Makefile").read_text(), re.M))
    assert exported
    for name in ("monolith", "monolith-migrate", "monolith-seed"):
        env = every[name]["environment"]
        assert exported | {"DATABASE_URL", "PYTHONUNBUFFERED"} <= set(env), name
        assert env["DATABASE_URL"].endswith("/shopkata_monolith")
    assert every["monolith"]["ports"] == ["127.0.0.1:8000:8000"]


def test_seeding_goes_through_each_gateway_like_the_launcher() -> None:
    every = services()
    for seed, gateway in (("services-seed", "gateway"), ("kata-seed", "kata-gateway")):
        command = every[seed]["command"]
        assert command[:3] == ["python", "-m", "loadtests.seed"]
        assert command[command.index("--base-url") + 1] == f"http://{gateway}:8000"
        assert every[seed]["depends_on"][gateway]["condition"] == "service_healthy"


def test_locust_runs_a_master_and_workers() -> None:
    every = services()
    master, worker = every["locust-master"], every["locust-worker"]
    for service in (master, worker):
        assert service["command"][:3] == ["locust", "-f", "loadtests/locustfile.py"]
        assert service["build"]["target"] == "locust"
    assert "--master" in master["command"]
    assert master["command"][master["command"].index("--host") + 1] == "http://gateway:8000"
    assert worker["command"][-3:] == ["--worker", "--master-host", "locust-master"]
    assert int(worker["deploy"]["replicas"]) >= 1
