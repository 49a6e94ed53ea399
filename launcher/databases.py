"""One database per service: a SQLite file by default, or a PostgreSQL database.

SQLite: ``var/<topology>/<service>.db``. PostgreSQL (``--database postgres`` or
``SHOP_DATABASE=postgresql://postgres@127.0.0.1:5432/postgres``): a database named
``shopkata_<topology>_<service>`` on that server, created when missing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from shop.kernel.topology import Topology

DEFAULT_POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

__all__ = [
    "DEFAULT_POSTGRES_SERVER",
    "DatabaseSetupError",
    "database_name",
    "ensure_postgres_databases",
    "postgres_urls",
    "server_url",
    "sqlite_urls",
]


class DatabaseSetupError(RuntimeError):
    """The PostgreSQL server could not be reached, or refused to create a database."""


def _identifier(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


def database_name(topology: Topology, service: str) -> str:
    """``shopkata_<topology>_<service>``, lower-case, anything else turned into ``_``."""
    return f"shopkata_{_identifier(topology.name)}_{_identifier(service)}"


def sqlite_urls(topology: Topology, folder: Path) -> dict[str, str]:
    """``sqlite+aiosqlite:///<folder>/<service>.db`` per service (absolute paths)."""
    folder = folder.resolve()
    return {name: f"sqlite+aiosqlite:///{folder / f'{name}.db'}" for name in topology.services}


def server_url(choice: str) -> str | None:
    """The PostgreSQL server a ``--database`` choice names, or None for SQLite.

    ``sqlite`` -> None; ``postgres`` -> the local default server; a ``postgresql://`` URL
    -> that server.
    """
    text = choice.strip()
    if text in {"", "sqlite"}:
        return None
    if text in {"postgres", "postgresql"}:
        return DEFAULT_POSTGRES_SERVER
    if text.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://")):
        return text
    raise ValueError(f"--database must be sqlite, postgres or a postgresql:// URL, got {choice!r}")


def postgres_urls(topology: Topology, server: str) -> dict[str, str]:
    """The asyncpg URL of each service's own database on ``server``."""
    base = make_url(server.replace("postgres://", "postgresql://", 1))
    return {
        name: base.set(
            drivername="postgresql+asyncpg", database=database_name(topology, name)
        ).render_as_string(hide_password=False)
        for name in topology.services
    }


async def _ensure(server: str, names: list[str]) -> list[str]:
    url = make_url(server.replace("postgres://", "postgresql://", 1))
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin, timeout=10)
    created = []
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database")
        existing = {row["datname"] for row in rows}
        for name in names:
            if name not in existing:
                # The name is built from [a-z0-9_] only (database_name), so quoting is enough.
                await conn.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
    finally:
        await conn.close()
    return created


def ensure_postgres_databases(server: str, urls: Mapping[str, str]) -> list[str]:
    """Create each service's database on ``server`` when missing; the names created."""
    names = [str(make_url(url).database) for url in urls.values()]
    try:
        return asyncio.run(_ensure(server, names))
    except (OSError, asyncpg.PostgresError) as exc:
        where = make_url(server.replace("postgres://", "postgresql://", 1))
        raise DatabaseSetupError(
            f"cannot create the services' databases on PostgreSQL at {where.host}:{where.port}:"
            f" {type(exc).__name__}: {exc}"
        ) from exc
