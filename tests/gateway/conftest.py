"""Fixtures of the gateway tests: everything in process, over ASGI, unless a test says so."""

from __future__ import annotations

import pytest

from tests.gateway.support import Keys


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway reads SHOP_* and GATEWAY_* variables: a developer's must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith(("GATEWAY_", "SHOP_TOPOLOGY", "SHOP_REPLICAS")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()
