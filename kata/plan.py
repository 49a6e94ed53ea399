"""The plan of the kata's branches: the step at which each of HEAD's files arrives.

First the manifest (kata/manifest.py; unlisted files belong to step 0), then a package's
``__init__.py`` arrives with its earliest member, then the closure: a ``.py`` file arrives
no earlier than any project module it imports at module level (kata/imports.py), nor
before its packages' ``__init__.py``. Branch k holds the files of steps 0..k.
"""

from __future__ import annotations

from dataclasses import dataclass

from kata.git import Entry, Git, Source, read_blobs
from kata.imports import ImportRef, ModuleIndex, module_level_imports
from kata.manifest import Manifest


@dataclass
class Placement:
    entry: Entry
    step: int
    origin: str
    """``manifest`` (a glob), ``default`` (step 0), ``package`` (an __init__.py with its
    earliest member) or ``closure`` (raised by a module-level import)."""
    detail: str = ""
    listed: int | None = None
    """The step the manifest (or the package rule) gave it before the closure."""


@dataclass(frozen=True)
class Plan:
    source: Source
    manifest: Manifest
    placements: dict[str, Placement]
    unmatched: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...]

    def files(self, number: int) -> list[Placement]:
        """The files step ``number`` adds."""
        return [p for _, p in sorted(self.placements.items()) if p.step == number]

    def tree(self, number: int) -> list[Entry]:
        """Every file of step ``number``'s tree."""
        return [p.entry for _, p in sorted(self.placements.items()) if p.step <= number]

    def pulled(self) -> list[Placement]:
        return [p for _, p in sorted(self.placements.items()) if p.origin == "closure"]


def make_plan(git: Git, source: Source, manifest: Manifest) -> Plan:
    placements: dict[str, Placement] = {}
    for entry in source.entries:
        hit = manifest.match(entry.path)
        if hit is None:
            placements[entry.path] = Placement(entry, 0, "default", listed=0)
        else:
            placements[entry.path] = Placement(entry, hit[0], "manifest", hit[1], listed=hit[0])
    used = {(p.step, p.detail) for p in placements.values() if p.origin == "manifest"}
    unmatched = tuple(
        (n, g) for n in sorted(manifest.globs) for g in manifest.globs[n] if (n, g) not in used
    )

    # A package's __init__.py arrives with its earliest member (any file below it).
    members: dict[str, list[str]] = {}
    for path in placements:
        if path.endswith("/__init__.py"):
            folder = path[: -len("__init__.py")]
            members[path] = [p for p in placements if p.startswith(folder) and p != path]
    for init, below in sorted(members.items(), key=lambda item: -item[0].count("/")):
        plain = [placements[p].step for p in below if not p.endswith("/__init__.py")]
        if plain and min(plain) != placements[init].step:
            placements[init].step = placements[init].listed = min(plain)
            placements[init].origin = "package"
            placements[init].detail = "with its earliest member"

    index = ModuleIndex.of(placements)
    python = [p for p in placements if p.endswith(".py")]
    blobs = read_blobs(git, (placements[p].entry.sha for p in python))
    warnings: list[str] = []
    deps: dict[str, list[tuple[str, ImportRef]]] = {}
    for path in python:
        try:
            refs = module_level_imports(blobs[placements[path].entry.sha], path)
        except (SyntaxError, ValueError) as exc:
            warnings.append(f"{path}: cannot parse it ({exc}); its imports are not followed")
            continue
        deps[path] = [
            (index.files[name], ref)
            for ref in refs
            for name in reversed(index.wanted(ref))
            if name in index.files and index.files[name] != path
        ]
    # Importing a module runs its packages' __init__.py first.
    parents: dict[str, list[str]] = {}
    for path in placements:
        folders = path.split("/")[:-1]
        chain = ["/".join(folders[:i]) + "/__init__.py" for i in range(len(folders), 0, -1)]
        parents[path] = [c for c in chain if c in placements and c != path]

    def pull(path: str, step: int, detail: str) -> bool:
        placement = placements[path]
        if step <= placement.step:
            return False
        placement.step, placement.origin, placement.detail = step, "closure", detail
        return True

    changed = True
    while changed:
        changed = False
        for path, needs in deps.items():
            for dep, ref in needs:
                step = placements[dep].step
                detail = f"line {ref.line} `{ref.text}` needs {dep} (step {step})"
                changed |= pull(path, step, detail)
        for path, chain in parents.items():
            for init in chain:
                step = placements[init].step
                changed |= pull(path, step, f"its package {init} is at step {step}")
        for init, below in members.items():
            if below:
                step = min(placements[p].step for p in below)
                changed |= pull(init, step, "every member arrives later")
    return Plan(source, manifest, placements, unmatched, tuple(warnings))
