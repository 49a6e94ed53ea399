"""Reading docker-compose.yml and the Dockerfile the way their tools do, without an engine.

``compose(env)`` is docker-compose.yml after compose's own steps that matter here: YAML with
its anchors and merge keys (PyYAML), then ``${VAR}`` / ``${VAR:-default}`` /
``${VAR:?message}`` interpolation from ``env`` (defaults otherwise; a required variable that
is unset or empty fails, as ``docker compose config`` does). The secrets the file requires
come from :data:`SECRETS` unless ``env`` says otherwise.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")
CONTAINERS_DOC = ROOT / "docs" / "containers.md"
BROKER = "rabbitmq"
"""The compose service of the services topology's bus (``bus = "rabbitmq"``)."""

_VARIABLE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}"
)

SECRETS = {
    "POSTGRES_PASSWORD": "test-database-password",
    "RABBITMQ_PASSWORD": "test-broker-password",
    "SHOP_INTERNAL_TOKEN": "test-internal-token",
    "SHOP_EDGE_TOKEN": "test-edge-token",
    "ORDERS_FINGERPRINT_KEY": "test-orders-fingerprint-key-0123456789abcdef",
    "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD": "test-admin-password",
}
"""What a .env file beside docker-compose.yml would hold: compose refuses to run without."""


class MissingVariable(AssertionError):
    """A ``${NAME:?message}`` that is unset or empty: compose stops with ``message``."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${NAME}`` and ``${NAME:-default}`` substitution, recursively."""
    if isinstance(value, str):
        if "$$" in value:
            raise AssertionError(f"escaped $$ is not handled by this reader: {value!r}")
        return _VARIABLE.sub(lambda m: _substitute(m, env), value)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


def _substitute(match: re.Match[str], env: dict[str, str]) -> str:
    given = env.get(match["name"])
    if given:
        return given
    if match["op"] == ":?":
        raise MissingVariable(match["name"], match["arg"])
    return match["arg"] or ""


def compose(env: dict[str, str] | None = None, *, secrets: bool = True) -> dict[str, Any]:
    """The file as compose reads it with ``env`` (plus :data:`SECRETS` when ``secrets``)."""
    data = interpolate(raw_compose(), {**(SECRETS if secrets else {}), **(env or {})})
    assert isinstance(data, dict)
    return data


def services(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    found = compose(env)["services"]
    assert isinstance(found, dict)
    return found


def schema() -> dict[str, Any]:
    data = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@dataclass
class Stage:
    """One ``FROM`` of the Dockerfile and the instructions under it."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    """Global ``ARG``s (before the first FROM) with their defaults."""
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"no stage {name!r} in the Dockerfile")

    def lineage(self, name: str) -> list[Stage]:
        """The stage and every stage it is built ``FROM``, nearest first."""
        chain = [self.stage(name)]
        names = {stage.name for stage in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain


@cache
def dockerfile() -> Dockerfile:
    """Instructions with their continuation lines joined; comments and blanks dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for text in logical:
        word, _, rest = text.partition(" ")
        word = word.upper()
        rest = rest.strip()
        if word == "FROM":
            parts = shlex.split(rest)
            parts = [part for part in parts if not part.startswith("--platform")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            assert word == "ARG", f"only ARG may come before the first FROM, not {word}"
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((word, rest))
    return Dockerfile(args=args, stages=stages)


def exec_form(args: str) -> list[str]:
    """A ``CMD``/``ENTRYPOINT`` in exec form (a JSON array); the shell form is refused."""
    value = json.loads(args)
    assert isinstance(value, list), f"not in exec form: {args}"
    assert all(isinstance(item, str) for item in value)
    return value
