"""Module-level project imports, read with ``ast``: what a file needs when it is imported.

Imports inside function bodies are lazy and do not count; those under ``if TYPE_CHECKING:``,
``try:`` and in class bodies do. :class:`ModuleIndex` says which modules a set of paths
provides, so an import can be checked against a step's files without running anything.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ImportRef:
    """One module-level import statement (one name of ``import a, b``)."""

    line: int
    text: str
    base: str
    """The module imported (``a.b`` of ``from a.b import c``), made absolute."""
    names: tuple[str, ...] = ()
    """What ``from base import ...`` takes; each may be a submodule."""


def module_name(path: str) -> str | None:
    """``a/b/c.py`` -> ``a.b.c``, ``a/b/__init__.py`` -> ``a.b``; None if not importable."""
    if not path.endswith(".py"):
        return None
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def _absolute(module: str | None, level: int, current: str, is_package: bool) -> str | None:
    if level == 0:
        return module
    package = current if is_package else current.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)] + (module.split(".") if module else [])
    return ".".join(base) or None


def module_level_imports(source: bytes, path: str) -> list[ImportRef]:
    """The imports that run when the module is imported: every ``import`` outside function
    bodies (``if TYPE_CHECKING:``, ``try:`` and class bodies included). Raises SyntaxError."""
    current = module_name(path) or ""
    is_package = path.endswith("/__init__.py")
    tree = ast.parse(source, filename=path)
    found: list[ImportRef] = []

    def visit(statements: Sequence[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(ImportRef(node.lineno, f"import {alias.name}", alias.name))
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node.module, node.level, current, is_package)
                if base is not None:
                    names = tuple(a.name for a in node.names if a.name != "*")
                    dots = "." * node.level + (node.module or "")
                    text = f"from {dots} import {', '.join(a.name for a in node.names)}"
                    found.append(ImportRef(node.lineno, text, base, names))
            else:
                for name in ("body", "orelse", "finalbody"):
                    block = getattr(node, name, None)
                    if isinstance(block, list):
                        visit([s for s in block if isinstance(s, ast.stmt)])
                for handler in getattr(node, "handlers", None) or []:
                    visit(handler.body)
                for case in getattr(node, "cases", None) or []:
                    visit(case.body)

    visit(tree.body)
    return found


@dataclass(frozen=True)
class ModuleIndex:
    """The importable modules of a set of paths: name -> file, plus namespace packages."""

    files: dict[str, str]
    known: frozenset[str]
    tops: frozenset[str]

    @classmethod
    def of(cls, paths: Iterable[str]) -> ModuleIndex:
        files: dict[str, str] = {}
        known: set[str] = set()
        for path in paths:
            name = module_name(path)
            if name is None:
                continue
            files[name] = path
            parts = name.split(".")
            known.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        return cls(files, frozenset(known), frozenset(n.split(".")[0] for n in known))

    def wanted(self, ref: ImportRef) -> list[str]:
        """The project modules ``ref`` needs, outermost package first (only those in this
        index; a name that is an attribute, not a module, is not needed as a module)."""
        if ref.base.split(".")[0] not in self.tops:
            return []
        parts = ref.base.split(".")
        names = [".".join(parts[: i + 1]) for i in range(len(parts))]
        names += [f"{ref.base}.{n}" for n in ref.names if f"{ref.base}.{n}" in self.known]
        return [n for n in names if n in self.known or n == ref.base]


@functools.lru_cache(maxsize=4096)
def _imports_of(source: bytes, path: str) -> tuple[ImportRef, ...]:
    """:func:`module_level_imports`, parsed once per file for the seven steps that hold it."""
    return tuple(module_level_imports(source, path))


def check_imports(
    files: Iterable[str], blobs: Mapping[str, bytes], reference: ModuleIndex
) -> list[str]:
    """Module-level project imports of ``files`` that do not resolve among them.

    ``reference`` (HEAD's modules) says which names are project modules at all, so an
    attribute imported from a module is not mistaken for a missing submodule."""
    paths = sorted(files)
    here = ModuleIndex.of(paths)
    problems = []
    for path in paths:
        if not path.endswith(".py") or path not in blobs:
            continue
        try:
            refs = _imports_of(blobs[path], path)
        except (SyntaxError, ValueError) as exc:
            problems.append(f"{path}: cannot parse it ({exc})")
            continue
        for ref in refs:
            missing = [n for n in reference.wanted(ref) if n not in here.known]
            if missing:
                problems.append(f"{path}:{ref.line} `{ref.text}`: no module {missing[0]}")
    return problems
