"""One OpenAPI document for the whole shop, merged from the services' own documents.

The merge is a union that never edits what it takes: each operation and each schema appears
exactly as the service that implements it documents it, so the result equals the monolith's
document whenever the services mount the same routers (which is how they are built). Only
what the gateway really serves is kept: a path goes in from the service its route names
(plus the gateway's own ``/healthz`` and ``/readyz``), never from ``/internal``, and a schema
goes in when a kept operation refers to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA_REF_PREFIX = "#/components/schemas/"


@dataclass
class MergedDocument:
    """The merged document and what could not be merged cleanly."""

    document: dict[str, Any]
    conflicts: list[str] = field(default_factory=list)
    """Human-readable notes: the same operation or schema documented two different ways."""


def _refs(node: Any) -> Iterator[str]:
    """Every schema name a JSON node refers to with ``$ref``."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(SCHEMA_REF_PREFIX):
                yield ref.removeprefix(SCHEMA_REF_PREFIX)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _reachable(paths: Mapping[str, Any], schemas: Mapping[str, Any]) -> set[str]:
    seen: set[str] = set()
    pending = list(_refs(paths))
    while pending:
        name = pending.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        pending.extend(_refs(schemas[name]))
    return seen


def merge_documents(
    documents: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    owner: Callable[[str], str | None],
    info: Mapping[str, Any],
    own: Mapping[str, Any] | None = None,
    is_hidden: Callable[[str], bool] = lambda path: False,
) -> MergedDocument:
    """Merge ``(service, document)`` pairs, in the order given, into one document.

    ``owner(path)`` names the service the gateway routes ``path`` to (``None``: no route);
    ``own`` is the gateway's own document, whose paths are used where no service documents
    them; ``is_hidden(path)`` drops a path whatever documents it (``/internal``).
    Where two sources disagree the first one wins and the disagreement is reported.
    """
    conflicts: list[str] = []
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, dict[str, Any]] = {}
    where: dict[tuple[str, str], str] = {}
    openapi_version = None
    own_paths = set((own or {}).get("paths", {}))
    sources = [*documents, *([("gateway", own)] if own else [])]

    for source, document in sources:
        openapi_version = openapi_version or document.get("openapi")
        for path, item in document.get("paths", {}).items():
            if is_hidden(path):
                continue
            routed_to = owner(path)
            if source == "gateway":
                if path in paths:
                    continue  # the services document the gateway's own paths alike
            elif routed_to is None and path not in own_paths:
                continue  # the gateway cannot reach it
            elif routed_to is not None and routed_to != source:
                continue  # the gateway sends this path to another service
            target = paths.setdefault(path, {})
            for key, value in item.items():
                if key not in target:
                    target[key] = value
                    where[(path, key)] = source
                elif target[key] != value:
                    conflicts.append(
                        f"{key.upper()} {path}: {source} differs from {where[(path, key)]}; "
                        f"kept {where[(path, key)]}'s"
                    )
        for kind, entries in document.get("components", {}).items():
            entries_of_kind = components.setdefault(kind, {})
            for name, value in entries.items():
                if name not in entries_of_kind:
                    entries_of_kind[name] = value
                    where[(f"#{kind}", name)] = source
                elif entries_of_kind[name] != value:
                    conflicts.append(
                        f"components.{kind}.{name}: {source} differs from "
                        f"{where[(f'#{kind}', name)]}; kept {where[(f'#{kind}', name)]}'s"
                    )

    schemas = components.get("schemas", {})
    if schemas:
        keep = _reachable(paths, schemas)
        components["schemas"] = {name: value for name, value in schemas.items() if name in keep}
    components = {kind: entries for kind, entries in components.items() if entries}

    merged: dict[str, Any] = {
        "openapi": openapi_version or "3.1.0",
        "info": dict(info),
        "paths": paths,
    }
    if components:
        merged["components"] = components
    return MergedDocument(document=merged, conflicts=conflicts)
