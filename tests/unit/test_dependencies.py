"""Every endpoint and every dependency of every router is ``async``.

FastAPI runs a plain ``def`` endpoint or dependency in its thread pool: a hop to another
thread and back on every request, which cost more CPU than the lookup it wrapped
(docs/benchmarks.md, "Where the time went"). None of ours does blocking I/O, so none needs it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from composition.contexts import declared
from shop.kernel.ops import router as ops_router


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for child in dependant.dependencies:
        yield from _dependants(child)


def _is_async(call: object) -> bool:
    # A class instance (HTTPBearer, say) is called through its __call__.
    function = call if inspect.isroutine(call) else getattr(call, "__call__", call)  # noqa: B004
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


def test_no_endpoint_or_dependency_runs_in_the_thread_pool() -> None:
    routers = [ops_router]
    for context in declared().values():
        routers += (
            [context.router]
            if context.internal_router is None
            else [
                context.router,
                context.internal_router,
            ]
        )
    sync = []
    checked = 0
    for router in routers:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for dependant in _dependants(route.dependant):
                call = dependant.call
                if call is None:
                    continue
                checked += 1
                if not _is_async(call):
                    sync.append(f"{route.path} {sorted(route.methods or ())}: {call!r}")
    assert checked > 50
    assert sync == []
