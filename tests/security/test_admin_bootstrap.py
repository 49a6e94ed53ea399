"""Finding 1: the admin bootstrap never hands the admin role to an account someone else made.

The bootstrap (``IDENTITY_BOOTSTRAP_ADMIN_EMAIL`` / ``_PASSWORD``, at the start-up of whoever
serves identity) only creates the admin. An account that already holds the configured email
must be that admin, with the configured password, or start-up fails: otherwise whoever
registers a future admin's email first becomes admin at the next restart, with their own
password. Promotion is an explicit command (``python -m monolith create-admin --promote``)
that also sets the password; the development password is refused off loopback.

Each start-up test runs against both deployables that serve identity: the monolith and the
identity service, each on its own scratch database (SQLite, or PostgreSQL with
``TEST_DATABASE_URL``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx2
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from monolith import __main__ as monolith_cli
from monolith.app import create_app as create_monolith
from services import __main__ as services_cli
from services.app import create_app as create_service
from services.settings import ServiceSettings
from shop.identity.tokens import generate_private_key_pem
from shop.kernel import process
from tests import support
from tests.contract.helpers import bearer, expect, login, register, request_token

pytestmark = pytest.mark.anyio

SHAPES = ("monolith", "identity-service")
SERVICES_TOPOLOGY = Path("topologies/services.toml")
DEVELOPMENT_PASSWORD = "shopkata-admin"


@dataclass(frozen=True)
class Deployable:
    """A deployable that serves identity, on its own migrated scratch database."""

    shape: str
    database_url: str
    key: str

    def app(self, email: str | None, password: str | None) -> FastAPI:
        identity = support.identity_settings(self.key).model_copy(
            update={
                "bootstrap_admin_email": email,
                "bootstrap_admin_password": None if password is None else SecretStr(password),
            }
        )
        if self.shape == "monolith":
            settings = support.monolith_settings(self.database_url, self.key)
            return create_monolith(settings.with_contexts(identity))
        return create_service(
            ServiceSettings(
                database_url=self.database_url,
                internal_token=SecretStr("in-process-internal-token"),
                topology=SERVICES_TOPOLOGY,
                service_name="identity",
            ).with_contexts(identity)
        )


@pytest.fixture(params=SHAPES)
async def deployable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Deployable]:
    async with support.scratch_database(tmp_path) as url:
        await support.migrate(url, None if request.param == "monolith" else ["identity"])
        yield Deployable(request.param, url, generate_private_key_pem())


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx2.AsyncClient]:
    """The app started (its lifespan runs the bootstrap) and a client on it."""
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://identity.test"
        ) as client,
    ):
        yield client


async def role_of(client: httpx2.AsyncClient, email: str, password: str) -> str:
    token = await login(client, email, password)
    me = expect(await client.get("/users/me", headers=bearer(token)), 200)
    role = me["role"]
    assert isinstance(role, str)
    return role


async def start_up_refusal(app: FastAPI, email: str, password: str) -> tuple[str | None, str]:
    """Start ``app``: the refusal's message, or None and the role ``email`` then signs in with."""
    try:
        async with serving(app) as client:
            return None, await role_of(client, email, password)
    except RuntimeError as exc:
        return str(exc), ""
    except ExceptionGroup as group:
        # A service's lifespan runs its wiring inside its task group.
        refused, _ = group.split(RuntimeError)
        if refused is None:
            raise
        return "; ".join(str(exc) for exc in refused.exceptions), ""


async def test_a_future_admin_email_registered_first_is_refused_at_start_up(
    deployable: Deployable,
) -> None:
    future_admin = "future-admin@shopkata.test"
    async with serving(deployable.app(None, None)) as client:
        expect(await register(client, future_admin, "attacker-password", "Mallory"), 201)

    refusal, role = await start_up_refusal(
        deployable.app(future_admin, "operator-chosen-password"), future_admin, "attacker-password"
    )

    assert refusal is not None, (
        f"start-up accepted an account someone registered with the admin's email: the "
        f"attacker's own password now signs in as {role!r}"
    )
    assert future_admin in refusal
    assert "--promote" in refusal
    # Nothing was promoted on the way: the account is still the customer it was.
    async with serving(deployable.app(None, None)) as client:
        assert await role_of(client, future_admin, "attacker-password") == "customer"


async def test_a_rotated_bootstrap_password_fails_start_up_instead_of_being_ignored(
    deployable: Deployable,
) -> None:
    email = "root@shopkata.test"
    async with serving(deployable.app(email, "first-password")) as client:
        assert await role_of(client, email, "first-password") == "admin"
    # A restart with the same settings finds its own admin and starts.
    async with serving(deployable.app(email, "first-password")) as client:
        assert await role_of(client, email, "first-password") == "admin"

    refusal, _ = await start_up_refusal(
        deployable.app(email, "rotated-password"), email, "first-password"
    )

    assert refusal is not None, "a new IDENTITY_BOOTSTRAP_ADMIN_PASSWORD was silently ignored"
    assert email in refusal
    assert "does not verify" in refusal
    async with serving(deployable.app(None, None)) as client:
        assert (await request_token(client, email, "rotated-password")).status_code == 401


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def cli_env(deployable: Deployable, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment ``python -m monolith create-admin`` reads, on the deployable's data."""
    env = {
        "DATABASE_URL": deployable.database_url,
        "IDENTITY_SIGNING_KEY_PEM": deployable.key,
        "IDENTITY_ARGON2_TIME_COST": "1",
        "IDENTITY_ARGON2_MEMORY_KIB": "64",
        "IDENTITY_ARGON2_PARALLELISM": "1",
        "IDENTITY_ISSUER": support.ISSUER,
        "IDENTITY_AUDIENCE": support.AUDIENCE,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("IDENTITY_BOOTSTRAP_ADMIN_EMAIL", "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return env


async def create_admin(monkeypatch: pytest.MonkeyPatch, password: str, *args: str) -> None:
    monkeypatch.setenv("SHOP_ADMIN_PASSWORD", password)
    # The command runs its own event loop: in a thread, as from a shell.
    await anyio.to_thread.run_sync(monolith_cli.main, ["create-admin", *args])


@pytest.mark.usefixtures("cli_env")
async def test_create_admin_promotes_only_when_asked_and_then_sets_the_password(
    deployable: Deployable, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    email = "boss@shopkata.test"
    async with serving(deployable.app(None, None)) as client:
        expect(await register(client, email, "customer-password", "Boss"), 201)

    with pytest.raises(SystemExit) as refused:
        await create_admin(monkeypatch, "admin-password", "--email", email)
    assert "--promote" in str(refused.value.code)

    await create_admin(monkeypatch, "admin-password", "--email", email, "--promote")
    assert f"promoted admin {email}" in capsys.readouterr().out

    async with serving(deployable.app(email, "admin-password")) as client:
        assert await role_of(client, email, "admin-password") == "admin"
        assert (await request_token(client, email, "customer-password")).status_code == 401

    await create_admin(monkeypatch, "another-admin-pw", "--email", "new@shopkata.test")
    assert "created admin new@shopkata.test" in capsys.readouterr().out


# --------------------------------------------------------------------------- the listeners


@dataclass
class Served:
    calls: list[dict[str, Any]]

    def __call__(self, factory: str, **options: Any) -> None:
        self.calls.append({"factory": factory, **options})


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    """Stands in for uvicorn: records what would have been served, starts nothing."""
    record = Served([])
    monkeypatch.setattr(process, "serve", record)
    monkeypatch.setenv("IDENTITY_BOOTSTRAP_ADMIN_EMAIL", "admin@shopkata.local")
    monkeypatch.delenv("SHOP_TOPOLOGY", raising=False)
    return record


COMMANDS = {
    "monolith": (monolith_cli.main, ["serve"]),
    "identity-service": (
        services_cli.main,
        ["serve", "identity"],  # SHOP_TOPOLOGY unset: the services' topology
    ),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])  # noqa: S104
def test_the_development_password_is_refused_off_loopback(
    command: str, host: str, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    main, args = COMMANDS[command]
    monkeypatch.setenv("IDENTITY_BOOTSTRAP_ADMIN_PASSWORD", DEVELOPMENT_PASSWORD)

    with pytest.raises(SystemExit) as refused:
        main([*args, "--host", host])

    assert served.calls == [], f"served on {host} with the published admin password"
    assert "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD" in str(refused.value.code)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_loopback_or_a_real_password_serves(
    command: str, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    main, args = COMMANDS[command]
    monkeypatch.setenv("IDENTITY_BOOTSTRAP_ADMIN_PASSWORD", DEVELOPMENT_PASSWORD)
    for host in ("127.0.0.1", "::1", "localhost"):
        main([*args, "--host", host])
    monkeypatch.setenv("IDENTITY_BOOTSTRAP_ADMIN_PASSWORD", "a-password-of-our-own")
    main([*args, "--host", "0.0.0.0"])  # noqa: S104

    hosts = [call["host"] for call in served.calls]
    assert hosts == ["127.0.0.1", "::1", "localhost", "0.0.0.0"]  # noqa: S104
