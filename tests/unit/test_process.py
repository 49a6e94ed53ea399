"""Serving: the app is built by its factory, then the heap it was built from is frozen."""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest

from shop.kernel import process
from shop.kernel.server import ServerLimits

BUILT: list[object] = []


def factory() -> object:
    app = object()
    BUILT.append(app)
    return app


def test_the_built_app_is_the_factory_s_and_the_heap_behind_it_is_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_APP_FACTORY", f"{__name__}:factory")
    gc.unfreeze()
    try:
        app = process.built_app()
        assert app is BUILT[-1]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_serve_hands_uvicorn_the_freezing_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setenv("SHOP_APP_FACTORY", "")  # restored after the test, whatever serve sets
    monkeypatch.setenv("SHOP_SERVER_LIMITS", "")
    limits = ServerLimits(max_header_bytes=4096)
    process.serve(
        "monolith.app:create_app", host="127.0.0.1", port=8001, workers=2, limits=limits, x=1
    )
    [(app, options)] = calls
    assert app == "shop.kernel.process:built_app"
    assert options == {
        "factory": True,
        "host": "127.0.0.1",
        "port": 8001,
        "workers": 2,
        "log_level": "info",
        "log_config": options["log_config"],
        "http": "shop.kernel.server:BoundedHttpToolsProtocol",
        "x": 1,
    }
    # Every handler, uvicorn's and the application's, names the request of each line.
    config = options["log_config"]
    assert all(h["filters"] == ["request_id"] for h in config["handlers"].values())
    assert config["root"]["handlers"] == ["app"]
    assert os.environ["SHOP_APP_FACTORY"] == "monolith.app:create_app"
    # Workers are new processes: the limits reach them through the environment too.
    assert ServerLimits.from_env() == limits
