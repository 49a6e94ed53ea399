"""Binding ports to adapters.

A context declares what it needs from another context as a ``typing.Protocol`` in its own
``ports.py``. The composition root (the monolith, or a service) puts one adapter per port
into ``app.state.ports`` in its lifespan; routers receive it through :func:`provide`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from fastapi import Request

P = TypeVar("P")


def provide(port: type[P]) -> Callable[[Request], Awaitable[P]]:
    """A FastAPI dependency returning the adapter bound to ``port`` in this app.

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency in its
    thread pool, a hop that cost more than the rest of the lookup on every request.
    """

    async def dependency(request: Request) -> P:
        bound: dict[type[Any], Any] = getattr(request.app.state, "ports", {})
        try:
            return cast(P, bound[port])
        except KeyError:
            raise RuntimeError(
                f"no adapter is bound to {port.__module__}.{port.__qualname__}"
            ) from None

    dependency.__name__ = f"provide_{port.__name__}"
    return dependency
