"""One database per service: a SQLite file by default, or a PostgreSQL database.

Where they live is named by a *data name*: the topology's name by default, or one name
shared by several topologies (``python -m launcher up --data kata``: every kata step runs
on the same databases, so the monolith's rows are still there when a context moves out).

SQLite: ``var/<data>/<service>.db``. PostgreSQL (``--database postgres`` or
``SHOP_DATABASE=postgresql://postgres@127.0.0.1:5432/postgres``): a database named
``shopkata_<data>_<service>`` on that server, created when missing.
:func:`service_urls` is the one function that turns a data name, services and a
``--database`` choice into URLs; the launcher and ``python -m kata migrate-data`` both call
it, so they always agree on where each service's rows are.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from shop.kernel.topology import Topology

DEFAULT_POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
VAR_DIR = Path("var")
"""Every run's files live under this folder (relative to the working directory)."""

__all__ = [
    "DEFAULT_POSTGRES_SERVER",
    "VAR_DIR",
    "DatabaseSetupError",
    "check_data_name",
    "data_dir",
    "database_name",
    "describe",
    "ensure_postgres_databases",
    "ensure_postgres_databases_async",
    "postgres_urls",
    "server_url",
    "service_urls",
    "sqlite_urls",
]

_DATA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class DatabaseSetupError(RuntimeError):
    """The PostgreSQL server could not be reached, or refused to create a database."""


def _identifier(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


def check_data_name(name: str) -> str:
    """``name`` if it can name a folder under ``var/`` and a database; ValueError otherwise.

    Letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit, at most 63
    characters, and never ``..`` (it must stay a folder of ``var/``).
    """
    if not _DATA_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"a data name is letters, digits, '_', '.' and '-' (at most 63, starting with a"
            f" letter or digit), got {name!r}"
        )
    return name


def data_dir(data: str, var_dir: Path = VAR_DIR) -> Path:
    """The folder of a data name: ``var/<data>/`` (SQLite files, logs, run topology)."""
    return var_dir / check_data_name(data)


def database_name(data: Topology | str, service: str) -> str:
    """``shopkata_<data>_<service>``, lower-case, anything else turned into ``_``.

    ``data`` is a data name, or a topology (its name is the default data name).
    """
    name = data.name if isinstance(data, Topology) else data
    return f"shopkata_{_identifier(name)}_{_identifier(service)}"


def _sqlite_url(folder: Path, service: str) -> str:
    return f"sqlite+aiosqlite:///{folder.resolve() / f'{service}.db'}"


def _postgres_url(server: str, data: Topology | str, service: str) -> str:
    base = make_url(server.replace("postgres://", "postgresql://", 1))
    return base.set(
        drivername="postgresql+asyncpg", database=database_name(data, service)
    ).render_as_string(hide_password=False)


def sqlite_urls(topology: Topology, folder: Path) -> dict[str, str]:
    """``sqlite+aiosqlite:///<folder>/<service>.db`` per service (absolute paths)."""
    return {name: _sqlite_url(folder, name) for name in topology.services}


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


def postgres_urls(topology: Topology, server: str, *, data: str | None = None) -> dict[str, str]:
    """The asyncpg URL of each service's own database on ``server`` (named by ``data``,
    default the topology's name)."""
    return {
        name: _postgres_url(server, topology if data is None else data, name)
        for name in topology.services
    }


def service_urls(
    data: str, services: Iterable[str], choice: str, *, folder: Path | None = None
) -> dict[str, str]:
    """The database URL of each service of the data name ``data`` for a ``--database``
    choice: ``var/<data>/<service>.db`` (or ``folder/<service>.db``) for SQLite,
    ``shopkata_<data>_<service>`` on the chosen PostgreSQL server otherwise.

    Nothing is created here (see :func:`ensure_postgres_databases`).
    """
    check_data_name(data)
    server = server_url(choice)
    if server is None:
        where = data_dir(data) if folder is None else folder
        return {service: _sqlite_url(where, service) for service in services}
    return {service: _postgres_url(server, data, service) for service in services}


def describe(data: str, choice: str, *, folder: Path | None = None) -> str:
    """Where the databases of ``data`` are, in words: ``sqlite: var/kata/<service>.db``."""
    server = server_url(choice)
    if server is None:
        return f"sqlite: {data_dir(data) if folder is None else folder}/<service>.db"
    names = database_name(data, "service").removesuffix("service") + "<service>"
    host = make_url(server.replace("postgres://", "postgresql://", 1))
    return f"postgresql: {names} on {host.host or 'localhost'}:{host.port or 5432}"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _ensure(server: str, names: list[str]) -> list[str]:
    url = make_url(server.replace("postgres://", "postgresql://", 1))
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin, timeout=10)
    created = []
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database")
        existing = {row["datname"] for row in rows}
        for name in names:
            if name in existing:
                continue
            try:
                await conn.execute(f"CREATE DATABASE {_quoted(name)}")
            except asyncpg.DuplicateDatabaseError:
                continue  # made by another process since the list was read
            created.append(name)
    finally:
        await conn.close()
    return created


async def ensure_postgres_databases_async(server: str, urls: Mapping[str, str]) -> list[str]:
    """:func:`ensure_postgres_databases` for callers already in an event loop."""
    names = [str(make_url(url).database) for url in urls.values()]
    try:
        return await _ensure(server, names)
    except (OSError, asyncpg.PostgresError) as exc:
        where = make_url(server.replace("postgres://", "postgresql://", 1))
        raise DatabaseSetupError(
            f"cannot create the services' databases on PostgreSQL at {where.host}:{where.port}:"
            f" {type(exc).__name__}: {exc}"
        ) from exc


def ensure_postgres_databases(server: str, urls: Mapping[str, str]) -> list[str]:
    """Create each service's database on ``server`` when missing; the names created."""
    return asyncio.run(ensure_postgres_databases_async(server, urls))
