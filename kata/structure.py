"""The fast check of every kata step's tree: in memory, from HEAD's files, in seconds.

``make test`` runs it (tests/kata/test_branches.py) and so does ``python -m kata branches
--check``; nothing is exported and nothing is started. For each step it checks, among the
files the step's branch holds:

- every module-level project import resolves (kata/imports.py);
- the step's topology file (kata/steps.py) is there and is a valid topology;
- every app that topology names (``[services.<name>] app = "module:factory"``, and the
  gateway's when it has one) resolves: its module is there and defines the factory at top
  level, and the package the launcher runs it with (``python -m monolith``, ``services``
  or ``gateway``) has its ``__main__.py``.

Whether each step's tree also passes the contract suite is the slow check, ``--verify``
(kata/verify.py, ``make kata-verify``).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from kata.git import Git, read_blobs
from kata.imports import ModuleIndex, check_imports, module_name
from kata.plan import Plan
from kata.steps import STEPS, Step
from launcher.core import DEFAULT_GATEWAY_APP
from shop.kernel.topology import TopologyError, parse


def _defines(source: bytes, name: str) -> bool:
    """Whether a module binds ``name`` at top level (a def, a class, an assignment or an
    import under that name)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return True
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        elif isinstance(node, ast.Import | ast.ImportFrom) and any(
            (alias.asname or alias.name.split(".")[0]) == name for alias in node.names
        ):
            return True
    return False


def _check_app(
    app: str, owner: str, blobs: Mapping[str, bytes], here: ModuleIndex, runner: str = ""
) -> list[str]:
    """``app`` is there and defines its factory; ``runner`` (default: the app's top package)
    has the ``__main__.py`` the launcher runs it with."""
    module, _, factory = app.partition(":")
    if module not in here.files:
        return [f"{owner}: app {app!r}: no module {module} in this step"]
    problems = []
    if factory and not _defines(blobs.get(here.files[module], b""), factory):
        problems.append(f"{owner}: app {app!r}: {here.files[module]} defines no {factory}")
    top = runner or module.split(".")[0]
    if f"{top}.__main__" not in here.files:
        problems.append(f"{owner}: app {app!r}: no {top}/__main__.py to run it with")
    return problems


def check_tree(
    step: Step, files: Iterable[str], blobs: Mapping[str, bytes], reference: ModuleIndex
) -> list[str]:
    """The problems of one step's tree: ``files`` are its paths, ``blobs`` the contents of
    its ``.py`` files and topology file, ``reference`` HEAD's modules (which names are
    project modules at all)."""
    paths = sorted(files)
    problems = check_imports(paths, blobs, reference)
    topology_path = step.topology.as_posix()
    if topology_path not in paths or topology_path not in blobs:
        return [*problems, f"topology {step.topology} is missing"]
    try:
        data = tomllib.loads(blobs[topology_path].decode("utf-8"))
        topology = parse(data, source=Path(topology_path))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, TopologyError) as exc:
        return [*problems, f"topology {step.topology} does not load: {exc}"]
    here = ModuleIndex.of(paths)
    for name, spec in topology.services.items():
        problems += _check_app(spec.app, f"{topology_path} [services.{name}]", blobs, here)
    if topology.gateway_port is not None:
        # The launcher runs the shop's gateway app with python -m gateway serve.
        problems += _check_app(
            DEFAULT_GATEWAY_APP, f"{topology_path} [gateway]", blobs, here, runner="gateway"
        )
    return problems


def check_steps(git: Git, plan: Plan) -> dict[int, list[str]]:
    """Every step's problems (an empty list for a sound step), read from HEAD's blobs."""
    wanted = {
        path: placement.entry.sha
        for path, placement in plan.placements.items()
        if module_name(path) is not None or path.endswith(".toml")
    }
    contents = read_blobs(git, wanted.values())
    blobs = {path: contents[sha] for path, sha in wanted.items()}
    reference = ModuleIndex.of(plan.placements)
    found = {}
    for step in STEPS:
        files = [entry.path for entry in plan.tree(step.number)]
        found[step.number] = check_tree(step, files, blobs, reference)
    return found
