"""What docker-compose.yml exposes: every port on 127.0.0.1 only, no secret with a default.

A port published on every interface with the README's admin password, or a database password
anyone can read in the repository, is an open shop. Compose's ``${NAME:?message}`` makes a
secret required: ``docker compose up`` stops with the message until it is set (a .env file).
"""

from __future__ import annotations

import re

import pytest

from tests.containers.support import (
    COMPOSE_FILE,
    SECRETS,
    MissingVariable,
    compose,
    raw_compose,
    services,
)

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY", re.IGNORECASE)
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:-|:\?|-|\?)?")


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
    """A new password or token in the file must join SECRETS, and so be required."""
    for name, service in raw_compose()["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for variable in environment:
            if SECRET_NAME.search(variable) and variable != "IDENTITY_SIGNING_KEY_FILE":
                assert variable in SECRETS, f"{name}: {variable} looks secret but is not required"
                assert str(environment[variable]).startswith(f"${{{variable}:?"), (name, variable)


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
