"""Fixtures of the contract suite: which deployment to test, HTTP clients, the admin.

The suite is black-box. It talks HTTP to either
- a running deployment (`--base-url URL`), or
- an in-process target (`--target MODULE:ATTR`, default `tests.targets:monolith`): ATTR is an
  async context manager factory yielding a dict with the keys of `helpers.Target`.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.contract.helpers")

import httpx2  # noqa: E402

from tests.contract.helpers import Target, User, client_for, sign_in_admin  # noqa: E402

DEFAULT_TARGET = "tests.targets:monolith"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("contract", "shopkata contract suite")
    group.addoption(
        "--base-url",
        default=None,
        help="test a running deployment at this URL instead of an in-process target",
    )
    group.addoption(
        "--target",
        default=DEFAULT_TARGET,
        help=f"MODULE:ATTR of an async context manager factory (default {DEFAULT_TARGET})",
    )
    group.addoption("--admin-email", default="admin@shopkata.local")
    group.addoption("--admin-password", default="shopkata-admin")
    group.addoption(
        "--signing-key-file",
        default="var/keys/jwt-ed25519.pem",
        help="PEM of the Ed25519 key the deployment signs JWTs with (relative to the cwd)",
    )
    group.addoption("--issuer", default="shopkata")
    group.addoption("--audience", default="shopkata")
    group.addoption(
        "--payment-delay",
        type=float,
        default=2.0,
        help="seconds the deployment's card processor waits for cards ending 0119",
    )


def _option(config: pytest.Config, name: str, default: Any) -> Any:
    value = config.getoption(name, default=default)
    return default if value is None else value


def _load_factory(spec: str) -> Callable[[], AbstractAsyncContextManager[Any]]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise pytest.UsageError(f"--target must look like MODULE:ATTR, got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attr)
    assert callable(factory), f"{spec} is not callable"
    return factory  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _deployment_target(config: pytest.Config, base_url: str) -> Target:
    key_file = Path(_option(config, "signing_key_file", "var/keys/jwt-ed25519.pem"))
    return Target(
        transport=None,
        base_url=base_url,
        admin_email=_option(config, "admin_email", "admin@shopkata.local"),
        admin_password=_option(config, "admin_password", "shopkata-admin"),
        signing_key_pem=key_file.read_text(),
        issuer=_option(config, "issuer", "shopkata"),
        audience=_option(config, "audience", "shopkata"),
        payment_delay_seconds=float(_option(config, "payment_delay", 2.0)),
    )


@pytest.fixture(scope="session")
async def target(pytestconfig: pytest.Config) -> AsyncIterator[Target]:
    base_url = pytestconfig.getoption("base_url", default=None)
    if base_url:
        yield _deployment_target(pytestconfig, str(base_url))
        return
    factory = _load_factory(_option(pytestconfig, "target", DEFAULT_TARGET))
    async with factory() as raw:
        yield Target.from_mapping(raw)


@pytest.fixture
async def client(target: Target) -> AsyncIterator[httpx2.AsyncClient]:
    async with client_for(target) as http:
        yield http


@pytest.fixture(scope="session")
async def admin(target: Target) -> User:
    """The seeded administrator, logged in once for the whole session."""
    async with client_for(target) as http:
        return await sign_in_admin(http, target)
