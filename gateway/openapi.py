"""One OpenAPI document for the whole shop, merged from the services' own documents.

The merge is a union that never edits what it takes: each operation and each schema appears
exactly as the service that implements it documents it, so the result equals the monolith's
document whenever the services mount the same routers (which is how they are built). Only
what the gateway really serves is kept: a path goes in from the service its route names
(plus the gateway's own ``/healthz`` and ``/readyz``), never from ``/internal``, and a schema
goes in when a kept operation refers to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from shop.kernel.errors import ShopError
from shop.kernel.http import Upstream, expect

logger = logging.getLogger("gateway")

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


def _document(body: Any) -> dict[str, Any]:
    """A service's OpenAPI document, checked for the shape the merge reads."""
    if not isinstance(body, dict):
        raise TypeError("an OpenAPI document is an object")
    for key in ("paths", "components"):
        section = body.get(key, {})
        if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
            raise TypeError(f"{key} is not an object of objects")
    return body


class OpenApi:
    """The merged document, fetched from every routed service (through its breakers, all at
    once) and reused for ``cache_seconds`` once complete.

    A service whose document cannot be had (down, slow, or a body that is not a document)
    is left out and named; the incomplete document is served but fetched again next time.
    """

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        owner: Callable[[str], str | None],
        info: Mapping[str, Any],
        is_hidden: Callable[[str], bool],
        cache_seconds: float,
    ) -> None:
        self._upstreams = upstreams
        self._owner = owner
        self._info = dict(info)
        self._is_hidden = is_hidden
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = anyio.Lock()

    async def _fetch(self, name: str) -> dict[str, Any] | None:
        try:
            response = await self._upstreams[name].request(
                "GET", "/openapi.json", idempotent=True, headers={"Accept": "application/json"}
            )
            return expect(response, 200, read=_document)
        except ShopError as exc:
            logger.warning("OpenAPI document of %s: %s", name, exc.detail)
            return None

    async def document(self, own: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The merged document and the services whose documents could not be had."""
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_seconds:
                return self._cached[1], []
            documents: dict[str, dict[str, Any]] = {}

            async def fetch(name: str) -> None:
                document = await self._fetch(name)
                if document is not None:
                    documents[name] = document

            async with anyio.create_task_group() as tasks:
                for name in self._upstreams:
                    tasks.start_soon(fetch, name)
            merged = merge_documents(
                [(name, documents[name]) for name in self._upstreams if name in documents],
                owner=self._owner,
                info=self._info,
                own=own,
                is_hidden=self._is_hidden,
            )
            for conflict in merged.conflicts:
                logger.warning("OpenAPI merge: %s", conflict)
            missing = sorted(set(self._upstreams) - set(documents))
            if not missing:
                self._cached = (now, merged.document)
            return merged.document, missing
