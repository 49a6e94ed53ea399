"""Test infrastructure shared by the suites: scratch databases and app settings.

Every suite runs on SQLite by default. With ``TEST_DATABASE_URL`` pointing at a PostgreSQL
server (``postgresql://postgres@127.0.0.1:5432/postgres``), each scratch database is a
fresh PostgreSQL database on that server instead, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import asyncpg  # type: ignore[import-untyped]
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from monolith.settings import MonolithSettings
from shop.identity.settings import IdentitySettings
from shop.identity.tokens import generate_private_key_pem
from shop.kernel.migrations import CONTEXTS, upgrade
from shop.orders.settings import OrdersSettings
from shop.payments.settings import PaymentsSettings

ADMIN_EMAIL = "admin@shopkata.test"
ADMIN_PASSWORD = "admin-password-for-tests"
ISSUER = "shopkata-tests"
AUDIENCE = "shopkata-tests"
PAYMENT_DELAY_SECONDS = 0.2
FINGERPRINT_KEY = "fingerprint-key-for-tests-0123456789abcdef"


def postgres_server_url() -> str | None:
    """The PostgreSQL server the suites should use, if any."""
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    return url or None


async def _admin_connection(server_url: str) -> asyncpg.Connection:
    url = make_url(server_url).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


async def create_scratch_database(tmp_dir: Path) -> str:
    """A new, empty database URL: a SQLite file, or a fresh PostgreSQL database."""
    server = postgres_server_url()
    if server is None:
        return f"sqlite+aiosqlite:///{tmp_dir / f'shop-{uuid.uuid4().hex[:8]}.db'}"
    name = f"shopkata_test_{uuid.uuid4().hex[:12]}"
    conn = await _admin_connection(server)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(server).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


async def drop_scratch_database(url: str) -> None:
    """Drop a PostgreSQL scratch database (a SQLite file goes with its temporary folder)."""
    server = postgres_server_url()
    parsed = make_url(url)
    if server is None or parsed.get_backend_name() != "postgresql":
        return
    conn = await _admin_connection(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database(tmp_dir: Path) -> AsyncIterator[str]:
    """A new, empty database for the duration of the block."""
    url = await create_scratch_database(tmp_dir)
    try:
        yield url
    finally:
        await drop_scratch_database(url)


async def migrate(url: str, contexts: list[str] | None = None) -> None:
    """Apply migrations (Alembic runs its own event loop, so off this one)."""
    await anyio.to_thread.run_sync(upgrade, url, contexts or CONTEXTS)


def identity_settings(signing_key_pem: str) -> IdentitySettings:
    """Cheap password hashing, a known key and a bootstrap admin: for tests only."""
    return IdentitySettings(
        signing_key_pem=SecretStr(signing_key_pem),
        issuer=ISSUER,
        audience=AUDIENCE,
        argon2_time_cost=1,
        argon2_memory_kib=64,
        argon2_parallelism=1,
        bootstrap_admin_email=ADMIN_EMAIL,
        bootstrap_admin_password=SecretStr(ADMIN_PASSWORD),
    )


def monolith_settings(database_url: str, signing_key_pem: str | None = None) -> MonolithSettings:
    return MonolithSettings(database_url=database_url, recover_checkouts=False).with_contexts(
        identity_settings(signing_key_pem or generate_private_key_pem()),
        PaymentsSettings(processor_delay_seconds=PAYMENT_DELAY_SECONDS),
        OrdersSettings(recovery_interval_seconds=3600, fingerprint_key=SecretStr(FINGERPRINT_KEY)),
    )
