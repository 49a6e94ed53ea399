"""Serving a deployable: uvicorn, with the heap the app was built from kept out of the GC.

A server process builds hundreds of thousands of long-lived objects before its first request
(FastAPI's routes and dependency trees, pydantic's validators, SQLAlchemy's mappers and
compiled statements) and keeps them to the end. Python's cyclic garbage collector walks every
one of them again at each full collection, under load several times a minute: on a product
view that cost about 7% of the CPU (docs/benchmarks.md). ``gc.freeze()`` once the app is
built moves them to a generation the collector never walks; what requests allocate is
collected as before.
"""

from __future__ import annotations

import gc
import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from shop.kernel.correlation import log_config
from shop.kernel.server import LIMITS_ENV, ServerLimits

_FACTORY = "SHOP_APP_FACTORY"
PROTOCOL = "shop.kernel.server:BoundedHttpToolsProtocol"


def serve(
    factory: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    limits: ServerLimits | None = None,
    environment: Mapping[str, str] | None = None,
    **options: Any,
) -> None:
    """Serve the app that ``factory`` (``module:function``) builds, in each worker process;
    ``options`` go to ``uvicorn.run`` as they are; ``environment`` is added to the process's
    environment first (the app and its workers read their settings from it).

    The HTTP protocol is uvicorn's httptools one with ``limits`` on what a client may send
    (:mod:`shop.kernel.server`). Every log line, uvicorn's access log and the application's
    own, names the request it was written for (:func:`shop.kernel.correlation.log_config`).
    """
    import uvicorn

    # Workers are new processes: they find the factory and the limits in their environment.
    os.environ.update(environment or {})
    os.environ[_FACTORY] = factory
    os.environ[LIMITS_ENV] = (limits or ServerLimits()).to_env()
    uvicorn.run(
        f"{__name__}:built_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        log_config=log_config(),
        http=PROTOCOL,
        **options,
    )


def built_app() -> Any:
    """The app of ``SHOP_APP_FACTORY``, built, with the heap frozen behind it."""
    module, _, name = os.environ[_FACTORY].partition(":")
    factory: Callable[[], Any] = getattr(importlib.import_module(module), name)
    app = factory()
    gc.collect()
    gc.freeze()
    return app
