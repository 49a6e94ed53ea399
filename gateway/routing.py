"""Routing: which service each public path goes to, and which paths never go anywhere.

The one place the gateway reads its route table: :class:`Routes` is made from the
``(prefix, service)`` pairs :func:`gateway.app.create_app` is given (the shop's derived
from the contexts' declarations by ``composition.routes``, or ``GATEWAY_ROUTES``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")

OWN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
"""Answered by the gateway itself, never proxied."""


def is_internal(path: str) -> bool:
    """``/internal`` and below: service-to-service endpoints, never reachable from outside."""
    first = path.lstrip("/").split("/", 1)[0]
    return first.lower() == "internal"


def has_dot_segment(path: str) -> bool:
    """``.`` or ``..`` segments, which some servers resolve and some do not.

    Refusing them keeps the gateway's routing decision and the upstream's reading of the
    path the same (``/products/../internal/x`` must not become ``/internal/x`` upstream).
    """
    return "/." in path and any(segment in (".", "..") for segment in path.split("/"))


def _single_segment(prefix: str) -> bool:
    """``/products``: exactly one segment, no trailing slash."""
    return len(prefix) > 1 and "/" not in prefix[1:]


class Routes:
    """Prefix -> service name; a path goes to its longest matching prefix, and a prefix
    matches whole segments (``/orders`` matches ``/orders/1``, not ``/ordersheet``)."""

    def __init__(self, routes: Sequence[tuple[str, str]]) -> None:
        for prefix, service in routes:
            if not prefix.startswith("/"):
                raise ValueError(f"route {prefix!r} (to {service}) must start with /")
        self.table = sorted(routes, key=lambda route: len(route[0]), reverse=True)
        self.services = frozenset(service for _, service in routes)
        """Every service a route names."""

    def service(self, path: str) -> str | None:
        """The service ``path`` goes to, if any route claims it (``/internal`` aside)."""
        for prefix, service in self.table:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return service
        return None

    def bind(self, targets: Mapping[str, T]) -> Callable[[str], T | None]:
        """``path -> targets[service of path]``, the lookup on every proxied request.

        When every prefix is one segment (every shipped topology), the first segment of the
        path decides: a dict lookup instead of a scan of the table.
        """
        missing = self.services - set(targets)
        if missing:
            raise ValueError(f"routes name services with no upstream: {sorted(missing)}")
        if not all(_single_segment(prefix) for prefix, _ in self.table):
            service = self.service

            def scan(path: str) -> T | None:
                name = service(path)
                return None if name is None else targets[name]

            return scan
        by_segment = {prefix[1:]: targets[service] for prefix, service in self.table}
        get = by_segment.get

        def lookup(path: str) -> T | None:
            return get(path.split("/", 2)[1] if path[:1] == "/" else "")

        return lookup
