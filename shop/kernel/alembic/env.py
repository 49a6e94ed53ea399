"""Shared Alembic environment: see ``shop.kernel.migrations``."""

from shop.kernel.migrations import run_env

run_env()
