"""Alembic glue: one migration stream per context, each with its own version table.

A context's stream is its ``shop/<context>/migrations/versions`` folder and the table
``<context>_alembic_version``; the environment script and revision template are shared
(``shop/kernel/alembic``), and the context's ``models`` module supplies the metadata.
Deployables call :func:`upgrade` with the streams they own (the monolith: all of them).

    python -m shop.kernel.migrations upgrade [CONTEXT ...]      # DATABASE_URL or --url
    python -m shop.kernel.migrations revision CONTEXT -m "add x"  # autogenerate
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection

from shop.kernel.db import create_engine, normalise_url
from shop.kernel.settings import DEFAULT_DATABASE_URL

SHOP_ROOT = Path(__file__).resolve().parent.parent
CONTEXTS = sorted(
    folder.name for folder in SHOP_ROOT.iterdir() if (folder / "migrations" / "versions").is_dir()
)
"""Every context with a migration stream (a ``migrations/versions`` folder), by name."""


def version_table(context_name: str) -> str:
    return f"{context_name}_alembic_version"


def alembic_config(context_name: str, url: str) -> Config:
    """The Alembic configuration of one context's stream against ``url``."""
    if context_name not in CONTEXTS:
        raise ValueError(f"unknown context {context_name!r}; expected one of {CONTEXTS}")
    cfg = Config()
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("script_location", str(SHOP_ROOT / "kernel" / "alembic"))
    versions = SHOP_ROOT / context_name / "migrations" / "versions"
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    # New revisions come out linted and formatted like the rest of the code.
    cfg.set_section_option("post_write_hooks", "hooks", "lint, format")
    for hook, options in (("lint", "check --fix --unsafe-fixes"), ("format", "format")):
        cfg.set_section_option("post_write_hooks", f"{hook}.type", "module")
        cfg.set_section_option("post_write_hooks", f"{hook}.module", "ruff")
        cfg.set_section_option(
            "post_write_hooks", f"{hook}.options", f"{options} REVISION_SCRIPT_FILENAME"
        )
    cfg.attributes["context_name"] = context_name
    return cfg


def upgrade(url: str, context_names: list[str], revision: str = "head") -> None:
    """Apply each named context's migrations to the database at ``url``."""
    for name in context_names:
        command.upgrade(alembic_config(name, url), revision)


def run_env() -> None:
    """Body of the shared ``env.py``: migrate one context on the async engine."""
    config = context.config
    context_name = config.attributes["context_name"]
    metadata = importlib.import_module(f"shop.{context_name}.models").Base.metadata
    table = version_table(context_name)
    prefix = f"{context_name}_"

    def include_name(name: str | None, type_: str, _parent: object) -> bool:
        return type_ != "table" or (name or "").startswith(prefix)

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=table,
            include_name=include_name,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            version_table=table,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    async def run_async() -> None:
        # The deployables' own engine: on SQLite the same connection (WAL mode, busy
        # timeout), so a freshly migrated file is in WAL mode before any server opens it.
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "", pool_size=1)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run_async())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shop.kernel.migrations")
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="apply migrations (every context by default)")
    up.add_argument("contexts", nargs="*", metavar="CONTEXT", help=", ".join(CONTEXTS))
    rev = sub.add_parser("revision", help="autogenerate a revision for one context")
    rev.add_argument("context", choices=CONTEXTS)
    rev.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)
    if args.command == "upgrade":
        names = args.contexts or CONTEXTS
        upgrade(args.url, names)
        print(f"migrated {', '.join(names)}")
    else:
        command.revision(
            alembic_config(args.context, args.url), message=args.message, autogenerate=True
        )


if __name__ == "__main__":
    main()
