"""Every bounded context's declaration, found where it lives: ``shop/<name>/context.py``.

A context joins the shop by declaring itself there (a :class:`shop.kernel.context.Context`
named ``CONTEXT``); a topology then says where it runs. Nothing else lists the contexts.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable, Mapping

import shop
from shop.kernel.context import Context

KERNEL = "kernel"


class CompositionError(RuntimeError):
    """The declarations, the bindings and the topology do not fit together."""


@functools.cache
def declared() -> Mapping[str, Context]:
    """Every context under ``shop/``, by name (the order of their names)."""
    found: dict[str, Context] = {}
    for package in sorted(pkgutil.iter_modules(shop.__path__), key=lambda info: info.name):
        if not package.ispkg or package.name == KERNEL:
            continue
        module_name = f"{shop.__name__}.{package.name}.context"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise CompositionError(
                f"shop/{package.name}/ has no context.py: every package under shop/ but the"
                " kernel is a bounded context and declares itself there (CONTEXT = Context(...))"
            ) from None
        context = getattr(module, "CONTEXT", None)
        if not isinstance(context, Context) or context.name != package.name:
            raise CompositionError(
                f"{module_name}.CONTEXT must be a shop.kernel.context.Context named"
                f" {package.name!r}"
            )
        found[context.name] = context
    return found


def pick(names: Iterable[str], *, where: str) -> tuple[Context, ...]:
    """The declarations of ``names`` (in declaration order); unknown names are an error."""
    contexts = declared()
    wanted = set(names)
    unknown = sorted(wanted - set(contexts))
    if unknown:
        raise CompositionError(f"{where}: unknown contexts {unknown}; known: {sorted(contexts)}")
    return tuple(context for name, context in contexts.items() if name in wanted)
