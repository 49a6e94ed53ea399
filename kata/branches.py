"""python -m kata branches: one git branch per kata step, derived from HEAD by file selection.

Main (HEAD) is the final state of the kata. ``kata/manifest.toml`` says which files arrive
at which step; every tracked file it does not list belongs to step 0. Then a closure: a
``.py`` file arrives no earlier than any project module it imports at module level (imports
inside functions are lazy on purpose and do not count), and a package's ``__init__.py``
arrives with its earliest member. Branch k holds HEAD's files of steps 0..k, unchanged, so
``git diff kata/01-gateway kata/02-catalog`` shows exactly what step 2 adds.

The commits are built with git plumbing on a temporary index (the user's working tree,
index and current branch are never touched), with the dates of HEAD's commit and one
identity, so the same HEAD always yields the same commits. Rerunning is safe: a branch that
still points at an earlier generated commit moves; one with commits of the learner's own
on top is left alone unless ``--force`` (which keeps the old tip as a backup branch).

``--verify`` exports each step's tree to a temporary directory and checks that every
module-level project import resolves there, that the step's topology file exists, and that
the contract suite passes against the step's in-process target (``tests.targets:step_<k>``).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kata.steps import LAST, STEPS, Step, monolith_contexts

MANIFEST = "kata/manifest.toml"
DEFAULT_PREFIX = "kata/"
FALLBACK_NAME = "shopkata kata"
FALLBACK_EMAIL = "kata@shopkata.invalid"
STEP_TRAILER = "Kata-Step"
SOURCE_TRAILER = "Kata-Source"
GIT_TIMEOUT = 120.0
"""Seconds any single git command may take (they take milliseconds on this repository)."""
CONTRACT_TIMEOUT = 900.0
"""Default seconds one step's contract run may take under ``--verify``."""
CONTRACT_ARGS = ("tests/contract", "-q", "-p", "no:cacheprovider")
"""The contract run of ``--verify``, after ``python -m pytest``; ``--target`` follows."""
LEARNER_SEARCH_DEPTH = 100
"""How far back a kept branch is searched for the generated commit the learner built on."""


class BranchError(Exception):
    """Something the user can fix; printed as one message, without a traceback."""


# --- git ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Git:
    """Runs git in one repository with a bounded timeout; failures become BranchError."""

    root: Path

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            proc = subprocess.run(  # noqa: S603 (fixed argv, no shell)
                ["git", *args],  # noqa: S607 (the user's git, from PATH)
                cwd=self.root,
                input=stdin,
                capture_output=True,
                env=full_env,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        except FileNotFoundError as exc:
            raise BranchError("git is not installed (or not on PATH)") from exc
        except subprocess.TimeoutExpired as exc:
            raise BranchError(f"`git {args[0]}` took longer than {GIT_TIMEOUT:.0f} s") from exc
        if check and proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
            raise BranchError(f"`git {' '.join(args[:3])}` failed: {detail}")
        return proc

    def text(
        self, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        return self.run(*args, stdin=stdin, env=env).stdout.decode().strip()

    def config(self, key: str) -> str | None:
        proc = self.run("config", "--get", key, check=False)
        value = proc.stdout.decode(errors="replace").strip()
        return value if proc.returncode == 0 and value else None


def open_repository(cwd: Path) -> Git:
    """The repository around ``cwd``; a clear error outside one."""
    probe = Git(cwd)
    proc = probe.run("rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise BranchError(
            f"{cwd} is not inside a git working tree; run this from your clone of shopkata"
        )
    return Git(Path(proc.stdout.decode().strip()))


@dataclass(frozen=True)
class Entry:
    """One file of a tree: git mode, blob id, path."""

    mode: str
    sha: str
    path: str


@dataclass(frozen=True)
class Source:
    """The commit the branches are derived from (HEAD), and its files."""

    commit: str
    label: str
    date: str
    """Committer date in git's internal format, ``<epoch> <+hhmm>``."""
    entries: tuple[Entry, ...]

    @property
    def short(self) -> str:
        return self.commit[:10]


def read_source(git: Git) -> Source:
    proc = git.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    if proc.returncode != 0:
        raise BranchError(
            "HEAD has no commit yet (unborn branch): commit the project first, "
            "then run `make kata-branches`"
        )
    commit = proc.stdout.decode().strip()
    on_kata = git.text("rev-list", "-1", "-E", f"--grep=^{STEP_TRAILER}: [0-9]+$", commit)
    if on_kata:
        raise BranchError(
            f"HEAD ({commit[:10]}) is built on a generated kata commit ({on_kata[:10]}): the "
            "branches are derived from main; switch back to it (`git switch main`) and rerun"
        )
    symbolic = git.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    label = symbolic.stdout.decode().strip() if symbolic.returncode == 0 else "detached HEAD"
    header = git.run("cat-file", "commit", commit).stdout.decode(errors="replace")
    date = ""
    for line in header.splitlines():
        if not line:
            break
        if line.startswith("committer "):
            date = " ".join(line.rsplit(" ", 2)[-2:])
    if not re.fullmatch(r"\d+ [+-]\d{4}", date):
        raise BranchError(f"cannot read the committer date of {commit[:10]}")
    entries = []
    for record in git.run("ls-tree", "-r", "-z", "--full-tree", commit).stdout.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.decode(errors="surrogateescape").partition("\t")
        mode, _kind, sha = meta.split(" ")
        entries.append(Entry(mode, sha, path))
    return Source(commit, label, date, tuple(sorted(entries, key=lambda e: e.path)))


def read_blobs(git: Git, shas: Iterable[str]) -> dict[str, bytes]:
    """The contents of many blobs in one ``git cat-file --batch``."""
    wanted = sorted(set(shas))
    if not wanted:
        return {}
    out = git.run("cat-file", "--batch", stdin="".join(f"{s}\n" for s in wanted).encode()).stdout
    blobs: dict[str, bytes] = {}
    pos = 0
    for sha in wanted:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode().split()
        if len(header) != 3:
            raise BranchError(f"cannot read blob {sha}: {' '.join(header)}")
        size = int(header[2])
        blobs[sha] = out[end + 1 : end + 1 + size]
        pos = end + 1 + size + 1
    return blobs


# --- manifest ----------------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: ``*`` and ``?`` stay within a segment, ``**`` spans segments,
    a trailing ``/`` means everything below that directory."""
    if pattern.endswith("/"):
        pattern += "**"
    parts = pattern.split("/")
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:.*/)?"
            continue
        i = 0
        while i < len(part):
            char = part[i]
            if char == "*":
                regex += "[^/]*"
            elif char == "?":
                regex += "[^/]"
            elif char == "[" and "]" in part[i + 2 :]:
                close = part.index("]", i + 2)
                body = part[i + 1 : close]
                if body.startswith("!"):
                    body = "^" + body[1:]
                regex += "[" + body.replace("\\", "\\\\") + "]"
                i = close
            else:
                regex += re.escape(char)
            i += 1
        if not last:
            regex += "/"
    return re.compile(regex)


@dataclass(frozen=True)
class Manifest:
    """Per step (1..LAST), the globs of the paths that arrive at it."""

    origin: str
    globs: dict[int, tuple[str, ...]]
    regexes: dict[int, tuple[re.Pattern[str], ...]] = field(repr=False)

    def match(self, path: str) -> tuple[int, str] | None:
        """The first step (and its glob) whose globs match ``path``."""
        for number in sorted(self.globs):
            for glob, regex in zip(self.globs[number], self.regexes[number], strict=True):
                if regex.fullmatch(path):
                    return number, glob
        return None


def parse_manifest(text: str, origin: str) -> Manifest:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BranchError(f"{origin} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"steps"})
    if unknown:
        raise BranchError(f"{origin}: unknown table or key {unknown[0]!r} (only [steps])")
    steps = data.get("steps", {})
    if not isinstance(steps, dict):
        raise BranchError(f"{origin}: [steps] must be a table")
    globs: dict[int, tuple[str, ...]] = {}
    for key, value in steps.items():
        if not (key.isdigit() and 1 <= int(key) <= LAST):
            raise BranchError(
                f"{origin}: [steps] keys are step numbers 1..{LAST} (step 0 takes every file "
                f"not listed), got {key!r}"
            )
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise BranchError(f"{origin}: steps.{key} must be a list of path globs (strings)")
        for glob in value:
            if glob.startswith("/") or ".." in glob.split("/") or "\\" in glob:
                raise BranchError(
                    f"{origin}: steps.{key}: {glob!r} must be a path relative to the "
                    "repository root, with / separators and no .."
                )
        globs[int(key)] = tuple(value)
    regexes = {n: tuple(glob_regex(g) for g in gs) for n, gs in globs.items()}
    return Manifest(origin, globs, regexes)


def load_manifest(git: Git, source: Source, path: Path | None) -> Manifest:
    if path is not None:
        try:
            return parse_manifest(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise BranchError(f"cannot read the manifest {path}: {exc.strerror}") from exc
    entry = next((e for e in source.entries if e.path == MANIFEST), None)
    if entry is None:
        raise BranchError(
            f"HEAD ({source.short}) has no {MANIFEST}: commit it, or pass --manifest PATH"
        )
    text = read_blobs(git, [entry.sha])[entry.sha].decode("utf-8", errors="replace")
    return parse_manifest(text, f"{MANIFEST} at {source.short}")


# --- imports -----------------------------------------------------------------------------


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


# --- the plan: which step each file arrives at --------------------------------------------


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
            refs = module_level_imports(blobs[path], path)
        except (SyntaxError, ValueError) as exc:
            problems.append(f"{path}: cannot parse it ({exc})")
            continue
        for ref in refs:
            missing = [n for n in reference.wanted(ref) if n not in here.known]
            if missing:
                problems.append(f"{path}:{ref.line} `{ref.text}`: no module {missing[0]}")
    return problems


# --- commits -----------------------------------------------------------------------------


def identity(git: Git) -> tuple[str, str]:
    name, email = git.config("user.name"), git.config("user.email")
    if name and email:
        return name, email
    return FALLBACK_NAME, FALLBACK_EMAIL


def describe(number: int) -> str:
    step = STEPS[number]
    served = monolith_contexts(number)
    if number == 0:
        return (
            "The modular monolith: every bounded context in one deployable, on one database, "
            "with in-process adapters for the ports between contexts."
        )
    if number == 1:
        return (
            "The gateway goes in front of the unchanged monolith (the strangler facade): "
            "clients keep one URL while contexts move out one at a time."
        )
    moved = " and ".join(step.extracts).capitalize()
    if len(step.extracts) == 1:
        text = (
            f"{moved} leaves the monolith: it runs as its own service on its own database, "
            "its data moves with it, the rest calls it through HTTP adapters of the same "
            "ports, and the gateway sends its paths to it."
        )
    else:
        text = (
            f"{moved} leave the monolith: each runs as its own service on its own database, "
            "their data moves with them, the rest calls them through HTTP adapters of the "
            "same ports, and the gateway sends their paths to them."
        )
    if served:
        return f"{text} The monolith still serves {', '.join(served)}."
    return f"{text} The monolith serves nothing and is retired."


def message(plan: Plan, number: int) -> str:
    step = STEPS[number]
    added = plan.files(number)
    paths = {e.path for e in plan.tree(number)}
    lines = [f"Kata step {number}: {step.title}", "", *textwrap.wrap(describe(number), 72), ""]
    lines.append(f"Topology: {step.topology}")
    if step.page.as_posix() in paths:
        lines.append(f"Guide:    {step.page.as_posix()} (the step and its exercise)")
    lines += ["", f"Adds {len(added)} file{'s' if len(added) != 1 else ''}:"]
    if len(added) <= 60:
        lines += [f"  {p.entry.path}" for p in added]
    else:
        groups: dict[str, int] = {}
        for p in added:
            head, sep, _ = p.entry.path.partition("/")
            key = head + "/" if sep else head
            groups[key] = groups.get(key, 0) + 1
        lines += [
            f"  {key} ({count})" if key.endswith("/") else f"  {key}"
            for key, count in sorted(groups.items())
        ]
    lines += ["", f"{STEP_TRAILER}: {number}", f"{SOURCE_TRAILER}: {plan.source.commit}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Built:
    number: int
    tree: str
    commit: str
    files: int


def build(git: Git, plan: Plan, scratch: Path) -> list[Built]:
    """One tree and one commit per step, on a temporary index; touches no ref."""
    name, email = identity(git)
    env_commit = {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": plan.source.date,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_COMMITTER_DATE": plan.source.date,
    }
    built: list[Built] = []
    parent: str | None = None
    for step in STEPS:
        index = {"GIT_INDEX_FILE": str(scratch / f"index-{step.number}")}
        entries = plan.tree(step.number)
        git.run("read-tree", "--empty", env=index)
        records = "".join(f"{e.mode} {e.sha}\t{e.path}\0" for e in entries)
        stdin = records.encode(errors="surrogateescape")
        git.run("update-index", "--add", "-z", "--index-info", stdin=stdin, env=index)
        tree = git.text("write-tree", env=index)
        parents = ["-p", parent] if parent else []
        text = message(plan, step.number).encode(errors="surrogateescape")
        commit = git.text(
            "commit-tree", "--no-gpg-sign", tree, *parents, "-F", "-", stdin=text, env=env_commit
        )
        built.append(Built(step.number, tree, commit, len(entries)))
        parent = commit
    return built


# --- branches ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitInfo:
    parents: tuple[str, ...]
    author: str
    committer: str
    trailers: dict[str, str]


def read_commit(git: Git, sha: str) -> CommitInfo | None:
    proc = git.run("cat-file", "commit", sha, check=False)
    if proc.returncode != 0:
        return None
    head, _, body = proc.stdout.decode(errors="replace").partition("\n\n")
    parents, author, committer = [], "", ""
    for line in head.splitlines():
        key, _, value = line.partition(" ")
        if key == "parent":
            parents.append(value)
        elif key == "author":
            author = value
        elif key == "committer":
            committer = value
    last = body.rstrip("\n").rpartition("\n\n")[2]
    trailers = {}
    for line in last.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in (STEP_TRAILER, SOURCE_TRAILER):
            trailers[key] = value.strip()
    return CommitInfo(tuple(parents), author, committer, trailers)


def is_generated(git: Git, sha: str, number: int) -> bool:
    """Whether ``sha`` is a commit this command made for step ``number``, with nothing of
    anyone else's in its history: the chain down to step 0 carries our trailers, one source,
    and author == committer (an amend or a rebase changes the committer date)."""
    source = None
    for expected in range(number, -1, -1):
        info = read_commit(git, sha)
        if info is None or info.author != info.committer:
            return False
        if info.trailers.get(STEP_TRAILER) != str(expected):
            return False
        if source is None:
            source = info.trailers.get(SOURCE_TRAILER)
        if not source or info.trailers.get(SOURCE_TRAILER) != source:
            return False
        if expected == 0:
            return not info.parents
        if len(info.parents) != 1:
            return False
        sha = info.parents[0]
    return False


def learner_commits(git: Git, tip: str, number: int) -> int | None:
    """How many commits sit on top of a generated step-``number`` commit (first parents)."""
    revs = git.text("rev-list", "--first-parent", f"--max-count={LEARNER_SEARCH_DEPTH}", tip)
    for count, sha in enumerate(revs.split()):
        if is_generated(git, sha, number):
            return count
    return None


def checked_out(git: Git) -> dict[str, str]:
    """Branch ref -> the worktree that has it checked out."""
    out = git.run("worktree", "list", "--porcelain").stdout.decode(errors="replace")
    found: dict[str, str] = {}
    worktree = ""
    for line in out.splitlines():
        if line.startswith("worktree "):
            worktree = line.removeprefix("worktree ")
        elif line.startswith("branch "):
            found[line.removeprefix("branch ")] = worktree
    return found


def branch_name(prefix: str, step: Step) -> str:
    return prefix + step.branch.removeprefix(DEFAULT_PREFIX)


def check_prefix(git: Git, prefix: str) -> None:
    if not prefix.endswith("/") and prefix:
        prefix_ok = False
    else:
        proc = git.run("check-ref-format", "--branch", prefix + "00-x", check=False)
        prefix_ok = proc.returncode == 0
    if not prefix_ok:
        raise BranchError(
            f"--prefix {prefix!r} must be a valid branch-name prefix ending in '/', like kata/"
        )


def existing_refs(git: Git, prefix: str) -> dict[str, str]:
    out = git.text("for-each-ref", "--format=%(refname) %(objectname)", f"refs/heads/{prefix}")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def backup(git: Git, prefix: str, name: str, tip: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{prefix}backup/{name.removeprefix(prefix)}-{stamp}"
    for attempt in range(1, 100):
        candidate = base if attempt == 1 else f"{base}-{attempt}"
        reflog = "kata branches: backup before --force"
        ref = f"refs/heads/{candidate}"
        proc = git.run("update-ref", "-m", reflog, ref, tip, "", check=False)
        if proc.returncode == 0:
            return candidate
    raise BranchError(f"cannot create a backup branch for {name}")


def update_branches(
    git: Git, plan: Plan, built: Sequence[Built], prefix: str, force: bool
) -> list[str]:
    """Point each step's branch at its commit when that is safe; one line per branch."""
    refs = existing_refs(git, prefix)
    busy = checked_out(git)
    lines = []
    for item in built:
        step = STEPS[item.number]
        name = branch_name(prefix, step)
        ref = f"refs/heads/{name}"
        old = refs.get(ref)
        reflog = f"kata branches: step {item.number} from {plan.source.short}"
        head = f"step {item.number}  {name:<22}"
        if old == item.commit:
            lines.append(f"{head} up to date ({item.commit[:10]})")
            continue
        if old is None:
            git.run("update-ref", "-m", reflog, ref, item.commit, "")
            lines.append(f"{head} created ({item.commit[:10]}, {item.files} files)")
            continue
        if ref in busy:
            lines.append(
                f"{head} KEPT: it is checked out in {busy[ref]}, so it is not moved to "
                f"{item.commit[:10]}; switch that worktree to another branch and rerun"
            )
            continue
        if is_generated(git, old, item.number):
            git.run("update-ref", "-m", reflog, ref, item.commit, old)
            lines.append(f"{head} updated ({old[:10]} -> {item.commit[:10]})")
            continue
        if force:
            saved = backup(git, prefix, name, old)
            git.run("update-ref", "-m", reflog + " (--force)", ref, item.commit, old)
            lines.append(
                f"{head} REPLACED ({old[:10]} -> {item.commit[:10]}); the old tip is kept "
                f"as {saved}"
            )
            continue
        ahead = learner_commits(git, old, item.number)
        what = (
            f"has {ahead} commit{'s' if ahead != 1 else ''} of your own on top of the kata commit"
            if ahead
            else "does not point at a commit this command made"
        )
        lines.append(
            f"{head} KEPT: it {what}. Keep your work on your own branch "
            f"(`git branch -m {name} my-{name.removeprefix(prefix)}`) and rerun, or rerun with "
            f"--force to replace it (the old tip is kept as {prefix}backup/"
            f"{name.removeprefix(prefix)}-<timestamp>)"
        )
    return lines


# --- report ------------------------------------------------------------------------------


def report(plan: Plan, *, listing: bool) -> list[str]:
    lines = []
    total = 0
    for step in STEPS:
        added = plan.files(step.number)
        total += len(added)
        lines.append(
            f"step {step.number}  {step.branch:<20} adds {len(added):>3} files "
            f"({total} in its tree)"
        )
        if listing:
            for p in added:
                mark = ""
                if p.origin == "closure":
                    mark = f"   <- closure (manifest: step {p.listed}): {p.detail}"
                elif p.origin == "package":
                    mark = "   <- package: with its earliest member"
                lines.append(f"    {'*' if p.origin == 'closure' else '+'} {p.entry.path}{mark}")
    pulled = plan.pulled()
    if pulled:
        lines.append(f"closure: {len(pulled)} file(s) arrive later than the manifest says:")
        lines += [f"    {p.entry.path}: step {p.listed} -> {p.step}: {p.detail}" for p in pulled]
    else:
        lines.append("closure: every file arrives at its manifest step")
    for number, glob in plan.unmatched:
        lines.append(f"manifest: steps.{number} glob {glob!r} matches no file at HEAD")
    lines += [f"warning: {w}" for w in plan.warnings]
    return lines


# --- verify ------------------------------------------------------------------------------


@dataclass
class Verdict:
    number: int
    files: int
    problems: list[str] = field(default_factory=list)
    contract: str = ""
    output: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def export(git: Git, tree: str, target: Path, scratch: Path) -> None:
    """Write ``tree``'s files under ``target`` (a temporary index; no checkout involved)."""
    index = {"GIT_INDEX_FILE": str(scratch / f"export-{tree}")}
    git.run("read-tree", tree, env=index)
    git.run("checkout-index", "--all", "--force", f"--prefix={target}/", env=index)


def run_contract(python: str, tree: Path, number: int, timeout: float) -> tuple[bool, str, str]:
    """``pytest tests/contract --target tests.targets:step_<n>`` in ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    argv = [python, "-m", "pytest", *CONTRACT_ARGS, "--target", f"tests.targets:step_{number}"]
    try:
        proc = subprocess.Popen(  # noqa: S603 (our interpreter, fixed argv)
            argv,
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return False, f"cannot start {python}: {exc.strerror}", ""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return False, f"timed out after {timeout:.0f} s", out.decode(errors="replace")
    text = out.decode(errors="replace")
    summary = next((s.strip("= ") for s in reversed(text.splitlines()) if s.strip()), "")
    return proc.returncode == 0, summary or f"exit {proc.returncode}", text


def verify(
    git: Git,
    plan: Plan,
    built: Sequence[Built],
    python: str,
    timeout: float,
    jobs: int,
    prefix: str,
) -> bool:
    reference = ModuleIndex.of(plan.placements)
    print(f"verify: {len(built)} steps; each contract run may take up to {timeout:.0f} s")
    with tempfile.TemporaryDirectory(prefix="kata-verify-") as tmp:
        scratch = Path(tmp)
        verdicts: dict[int, Verdict] = {}
        trees: dict[int, Path] = {}
        for item in built:
            step = STEPS[item.number]
            target = scratch / f"step-{item.number}"
            export(git, item.tree, target, scratch)
            trees[item.number] = target
            entries = plan.tree(item.number)
            blobs = {
                e.path: (target / e.path).read_bytes() for e in entries if e.path.endswith(".py")
            }
            verdict = Verdict(item.number, len(entries))
            verdict.problems += check_imports((e.path for e in entries), blobs, reference)
            if not (target / step.topology).is_file():
                verdict.problems.append(f"topology {step.topology} is missing")
            verdicts[item.number] = verdict

        def contract(number: int) -> None:
            start = time.monotonic()
            ok, summary, output = run_contract(python, trees[number], number, timeout)
            verdict = verdicts[number]
            verdict.seconds = time.monotonic() - start
            verdict.contract = summary
            if not ok:
                verdict.problems.append(f"contract suite: {summary}")
                verdict.output = output

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures: list[tuple[int, Future[None]]] = [
                (item.number, pool.submit(contract, item.number)) for item in built
            ]
            for number, future in futures:
                future.result()
                verdict = verdicts[number]
                name = branch_name(prefix, STEPS[number])
                state = "ok" if verdict.ok else "FAILED"
                print(
                    f"step {number}  {name:<22} {verdict.files:>4} files  {state:<6} "
                    f"contract: {verdict.contract}  ({verdict.seconds:.1f} s)",
                    flush=True,
                )
                for problem in verdict.problems:
                    print(f"    - {problem}")
                if verdict.output:
                    tail = verdict.output.rstrip().splitlines()[-40:]
                    print("\n".join(f"      | {line}" for line in tail))
    return all(v.ok for v in verdicts.values())


# --- command -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BranchError as exc:
        print(f"kata branches: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.timeout <= 0 or args.jobs < 1:
        raise BranchError("--timeout must be positive and --jobs at least 1")
    git = open_repository(Path.cwd())
    if not args.check:
        check_prefix(git, args.prefix)
    source = read_source(git)
    manifest = load_manifest(git, source, args.manifest)
    plan = make_plan(git, source, manifest)
    print(
        f"kata branches from {source.short} ({source.label}); manifest: {manifest.origin}",
        flush=True,
    )
    if git.run("--no-optional-locks", "status", "--porcelain").stdout.strip():
        print(
            "note: your working tree has uncommitted changes; they are not included: the "
            f"branches hold committed files only (HEAD {source.short})"
        )
    with tempfile.TemporaryDirectory(prefix="kata-branches-") as tmp:
        built = build(git, plan, Path(tmp))
    if args.check:
        print("\n".join(report(plan, listing=True)))
        print("--check: no branch was written")
    else:
        print("\n".join(update_branches(git, plan, built, args.prefix, args.force)))
        print(
            "\n".join(line for line in report(plan, listing=False) if not line.startswith("step "))
        )
    if args.verify:
        ok = verify(git, plan, built, args.python, args.timeout, args.jobs, args.prefix)
        print("verify: every step passed" if ok else "verify: FAILED (see above)")
        return 0 if ok else 1
    return 0


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = subparsers.add_parser(
        "branches",
        help="create or update one git branch per kata step (kata/00-monolith ...)",
        description=(
            "Create one local branch per kata step from HEAD's committed files "
            "(docs/kata/branches.md). Never touches your working tree, index or current "
            "branch. Safe to rerun."
        ),
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="build the trees and print each step's files and the closure; write no branch",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace branches that have commits of your own (the old tip is kept as "
        "<prefix>backup/<step>-<timestamp>)",
    )
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"branch name prefix (default {DEFAULT_PREFIX})"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help=f"read this manifest instead of HEAD's {MANIFEST} (to tune it before committing)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="export each step's tree and check its imports, its topology and its contract run",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the contract runs of --verify (default: this one)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=CONTRACT_TIMEOUT,
        help=f"seconds one contract run may take (default {CONTRACT_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="contract runs at the same time (default 1)"
    )
    parser.set_defaults(run=run)
