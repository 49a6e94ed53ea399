"""What docker-compose.yml exposes: every port on 127.0.0.1 only, no secret with a default.

A port published on every interface with the README's admin password, or a database password
anyone can read in the repository, is an open shop. Compose's ``${NAME:?message}`` makes a
secret required: ``docker compose up`` stops with the message until it is set (a .env file).
The broker is published nowhere: the services reach it on compose's network.
"""

from __future__ import annotations

import re

import pytest

from tests.containers.support import (
    BROKER,
    COMPOSE_FILE,
    CONTAINERS_DOC,
    SECRETS,
    MissingVariable,
    compose,
    raw_compose,
    services,
)

SECRET_NAME = re.compile(r"PASS|TOKEN|SECRET|_KEY", re.IGNORECASE)
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:-|:\?|-|\?)?")
REQUIRED = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}")
# RabbitMQ's ports: AMQP (and over TLS), the management UI (and over TLS), clustering, epmd.
BROKER_PORTS = {"5672", "5671", "15672", "15671", "25672", "4369"}


@pytest.mark.parametrize(
    "env", [{}, {"PORT": "9000", "LOCUST_PORT": "9089"}], ids=["defaults", "other-ports"]
)
def test_every_published_port_is_bound_to_loopback(env: dict[str, str]) -> None:
    published = {
        name: service["ports"] for name, service in services(env).items() if "ports" in service
    }
    assert {"monolith", "gateway", "kata-gateway", "locust-master"} <= set(published)
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str), f"{name}: use the short form, host address first"
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_secret_is_required_and_has_no_default() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    referenced = {m["name"]: m["op"] for m in REFERENCE.finditer(text)}
    for name in SECRETS:
        assert name in referenced, f"{name} is never used: drop it from SECRETS"
    for match in REFERENCE.finditer(text):
        if match["name"] in SECRETS:
            assert match["op"] == ":?", f"{match['name']} has a default or may be empty"
    for name in SECRETS:
        with pytest.raises(MissingVariable) as missing:
            compose({name: ""})
        assert missing.value.name == name


def test_every_secret_looking_variable_is_one_of_the_required_secrets() -> None:
    """A new password or token in the file must join SECRETS, and so be required; an image's
    own name for it (RABBITMQ_DEFAULT_PASS) reads one of them, whole."""
    for name, service in raw_compose()["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for variable in environment:
            if SECRET_NAME.search(variable) and variable != "IDENTITY_SIGNING_KEY_FILE":
                required = REQUIRED.fullmatch(str(environment[variable]))
                assert required is not None, f"{name}: {variable} is not one required ${{...:?}}"
                assert required["name"] in SECRETS, (
                    f"{name}: {variable} looks secret but {required['name']} is not in SECRETS"
                )


def test_the_secrets_reach_the_processes_that_need_them() -> None:
    every = services()
    identity_env = every["identity"]["environment"]
    assert identity_env["SHOP_INTERNAL_TOKEN"] == SECRETS["SHOP_INTERNAL_TOKEN"]
    for name in ("identity", "kata-monolith", "gateway", "kata-gateway"):
        assert every[name]["environment"]["SHOP_EDGE_TOKEN"] == SECRETS["SHOP_EDGE_TOKEN"]
    assert (
        identity_env["IDENTITY_BOOTSTRAP_ADMIN_PASSWORD"]
        == (SECRETS["IDENTITY_BOOTSTRAP_ADMIN_PASSWORD"])
    )
    password = SECRETS["POSTGRES_PASSWORD"]
    assert every["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    for name, service in every.items():
        url = service.get("environment", {}).get("DATABASE_URL")
        if url is not None:
            assert f"shopkata:{password}@postgres:5432/" in url, name
    broker_password = SECRETS["RABBITMQ_PASSWORD"]
    assert every[BROKER]["environment"]["RABBITMQ_DEFAULT_PASS"] == broker_password
    urls = {
        name: service["environment"]["SHOP_BROKER_URL"]
        for name, service in every.items()
        if "SHOP_BROKER_URL" in service.get("environment", {})
    }
    assert urls
    for name, url in urls.items():
        assert f":{broker_password}@{BROKER}:5672/" in url, name


@pytest.mark.parametrize(
    "env", [{}, {"PORT": "9000", "LOCUST_PORT": "9089"}], ids=["defaults", "other-ports"]
)
def test_the_broker_is_published_nowhere_but_on_loopback(env: dict[str, str]) -> None:
    """The services reach RabbitMQ by name on compose's network: AMQP is never published,
    and a management UI, if one is ever published, is on 127.0.0.1 like every port."""
    every = services(env)
    assert BROKER in every
    for name, service in every.items():
        for port in service.get("ports", []):
            target = str(port).rsplit(":", 1)[-1].split("/")[0]
            if name == BROKER or target in BROKER_PORTS:
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} widely"
            assert target not in {"5672", "5671"}, f"{name} publishes the broker's AMQP port"
    assert "network_mode" not in every[BROKER]


def test_every_secret_is_listed_in_the_file_and_in_the_env_example() -> None:
    """The compose file's header and docs/containers.md's .env example name every secret:
    compose refuses to start without any of them."""
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nname:", 1)[0]
    listed = set(re.findall(r"^#\s+([A-Z][A-Z0-9_]+)\s", header, flags=re.MULTILINE))
    doc = CONTAINERS_DOC.read_text(encoding="utf-8")
    example = doc.split("cat > .env <<END\n", 1)[1].split("\nEND\n", 1)[0]
    exampled = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    for name in SECRETS:
        assert name in listed, f"the header of docker-compose.yml does not list {name}"
        assert name in exampled, f"the .env example of docs/containers.md does not set {name}"
