"""Migrations: one stream per context, each with its own version table and tables.

Contexts own their tables (prefix ``<context>_``) and never reference another context's
tables, so any subset of streams can be applied, rolled back and re-applied on its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData
from sqlalchemy.engine import Inspector

from shop.kernel.db import create_engine
from shop.kernel.migrations import CONTEXTS, alembic_config, version_table
from tests import support

pytestmark = pytest.mark.anyio

T = TypeVar("T")


def metadata_of(context: str) -> MetaData:
    metadata = importlib.import_module(f"shop.{context}.models").Base.metadata
    assert isinstance(metadata, MetaData)
    return metadata


def head_of(context: str, url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(context, url)).get_current_head()
    assert head is not None
    return head


async def on_connection(url: str, work: Callable[[Connection], T]) -> T:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


async def inspect(url: str, work: Callable[[Inspector], T]) -> T:
    return await on_connection(url, lambda conn: work(sa.inspect(conn)))


async def table_names(url: str) -> set[str]:
    return set(await inspect(url, lambda inspector: inspector.get_table_names()))


async def versions(url: str, context: str) -> list[str]:
    def read(conn: Connection) -> list[str]:
        table = sa.table(version_table(context), sa.column("version_num"))
        return [row[0] for row in conn.execute(sa.select(table.c.version_num))]

    return await on_connection(url, read)


def owner(table: str) -> str:
    owners = [context for context in CONTEXTS if table.startswith(f"{context}_")]
    assert len(owners) == 1, f"table {table} is not prefixed by exactly one context"
    return owners[0]


async def alembic(action: Callable[..., Any], context: str, url: str, revision: str) -> None:
    # Alembic runs its own event loop (asyncio.run in env.py), so off this one.
    await anyio.to_thread.run_sync(action, alembic_config(context, url), revision)


@pytest.mark.parametrize("context", CONTEXTS)
async def test_a_stream_upgrades_an_empty_database_on_its_own(
    database_url: str, context: str
) -> None:
    await support.migrate(database_url, [context])

    tables = await table_names(database_url)

    assert tables == {version_table(context), *metadata_of(context).tables}
    assert await versions(database_url, context) == [head_of(context, database_url)]


async def test_every_stream_has_its_own_version_table_and_prefixed_tables(
    database_url: str,
) -> None:
    await support.migrate(database_url)

    tables = await table_names(database_url)

    expected = {version_table(c) for c in CONTEXTS}
    for context in CONTEXTS:
        expected |= set(metadata_of(context).tables)
        assert await versions(database_url, context) == [head_of(context, database_url)]
        assert all(owner(table) == context for table in metadata_of(context).tables)
    assert tables == expected
    assert "alembic_version" not in tables
    for table in tables:
        owner(table)


async def test_no_foreign_key_crosses_a_context(database_url: str) -> None:
    await support.migrate(database_url)

    def foreign_keys(inspector: Inspector) -> list[tuple[str, str]]:
        return [
            (table, fk["referred_table"])
            for table in inspector.get_table_names()
            for fk in inspector.get_foreign_keys(table)
        ]

    references = await inspect(database_url, foreign_keys)

    assert ("orders_lines", "orders_orders") in references  # the inspection does see FKs
    for table, referred in references:
        assert owner(table) == owner(referred), f"{table} references {referred}"
    for context in CONTEXTS:
        for model_table in metadata_of(context).tables.values():
            for fk in model_table.foreign_keys:
                assert owner(fk.column.table.name) == context


@pytest.mark.parametrize("context", CONTEXTS)
async def test_a_stream_downgrades_to_base_and_upgrades_again(
    database_url: str, context: str
) -> None:
    await support.migrate(database_url)
    others = (await table_names(database_url)) - set(metadata_of(context).tables)

    await alembic(command.downgrade, context, database_url, "base")

    after_downgrade = await table_names(database_url)
    assert not set(metadata_of(context).tables) & after_downgrade
    assert after_downgrade == others  # no other context's table was touched
    assert await versions(database_url, context) == []

    await alembic(command.upgrade, context, database_url, "head")

    assert set(metadata_of(context).tables) <= await table_names(database_url)
    assert await versions(database_url, context) == [head_of(context, database_url)]


@pytest.mark.parametrize("context", CONTEXTS)
async def test_the_models_match_the_migrations(database_url: str, context: str) -> None:
    await support.migrate(database_url)
    prefix = f"{context}_"

    def include_name(name: str | None, type_: str, _parent: object) -> bool:
        return type_ != "table" or (name or "").startswith(prefix)

    def diff(conn: Connection) -> list[Any]:
        migration = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": include_name,
                "version_table": version_table(context),
            },
        )
        return list(compare_metadata(migration, metadata_of(context)))

    assert await on_connection(database_url, diff) == []


async def test_upgrading_twice_changes_nothing(database_url: str) -> None:
    await support.migrate(database_url)
    before = await table_names(database_url)

    await support.migrate(database_url)

    assert await table_names(database_url) == before
    for context in CONTEXTS:
        assert await versions(database_url, context) == [head_of(context, database_url)]
