"""make kata-branches: one git branch per kata step, derived from HEAD (kata/branches.py).

Every test works in a scratch clone of this repository's committed HEAD (uncommitted
changes of the checkout running the tests are not in it), runs ``python -m kata branches``
there as a learner would, and reads the result with git. The checkout running the tests is
never written to.

Each step's tree is checked here in memory, in seconds (its imports, its topology, the apps
that topology names); the contract suite against each step's own tree is the slow check,
``make kata-verify`` (``python -m kata branches --verify``), which CI runs after ``make test``.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kata.git import Git, read_source
from kata.imports import ModuleIndex, module_level_imports
from kata.manifest import glob_regex, load_manifest
from kata.plan import Plan, make_plan
from kata.steps import STEPS
from kata.structure import check_steps, check_tree

# Git on scratch clones and checks in memory: nothing here depends on the database under
# test, so the PostgreSQL run does not repeat it.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 180.0
"""Seconds one ``python -m kata branches`` may take without --verify (it takes about 2)."""
STRUCTURE_SECONDS = 30.0
"""The structural check of every step takes about half a second; this bound is generous."""
NAMES = [step.branch for step in STEPS]


def _env() -> dict[str, str]:
    """The environment without git's and Python's redirections (a hook's GIT_DIR, a
    PYTHONPATH pointing at this checkout): the clone alone decides what runs."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") and key != "PYTHONPATH"
    }


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(  # noqa: S603 (git with our arguments)
        ["git", *args],  # noqa: S607 (git from PATH)
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def kata(
    repo: Path, *args: str, timeout: float = RUN_TIMEOUT, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = _env()
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run(  # noqa: S603 (our interpreter, our module)
        [sys.executable, "-m", "kata", "branches", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def heads(repo: Path, prefix: str = "kata/") -> dict[str, str]:
    out = git(
        repo, "for-each-ref", "--format=%(refname:short) %(objectname)", f"refs/heads/{prefix}"
    )
    return dict(line.split(" ", 1) for line in out.splitlines())


def line_of(output: str, name: str) -> str:
    found = [line for line in output.splitlines() if f" {name} " in line]
    assert len(found) == 1, f"no single line for {name} in:\n{output}"
    return found[0]


@pytest.fixture(scope="module")
def committed() -> None:
    """Skip where there is no committed main to derive branches from."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],  # noqa: S607 (git from PATH)
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip("not a git checkout with a commit: the kata branches come from git")
    on_kata = git(ROOT, "rev-list", "-1", "-E", "--grep=^Kata-Step: [0-9]+$", "HEAD")
    if on_kata:
        pytest.skip("this checkout is a kata branch; the branches are generated from main")


def clone(base: Path) -> Path:
    target = base / "clone"
    git(base, "clone", "--quiet", str(ROOT), str(target))
    return target


@dataclass(frozen=True)
class Made:
    repo: Path
    output: str
    head: str
    shas: dict[str, str]


@pytest.fixture(scope="module")
def made(committed: None, tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A clone with the branches made once; tests that change branches use their own."""
    repo = clone(tmp_path_factory.mktemp("kata-branches"))
    output = ok(kata(repo))
    return Made(repo, output, git(repo, "rev-parse", "HEAD"), heads(repo))


@pytest.fixture
def fresh(committed: None, tmp_path: Path) -> Path:
    """A clone of its own with the branches made, for a test that changes them."""
    repo = clone(tmp_path)
    ok(kata(repo))
    return repo


def plan_of(repo: Path) -> Plan:
    repository = Git(repo)
    source = read_source(repository)
    return make_plan(repository, source, load_manifest(repository, source, None))


def test_only_module_level_imports_count() -> None:
    source = b"""
from __future__ import annotations
import importlib
from typing import TYPE_CHECKING
import shop.kernel.db
from . import sibling
from ..kernel import settings as kernel_settings
if TYPE_CHECKING:
    from gateway.app import create_app
try:
    import launcher
except ImportError:
    launcher = None
class Holder:
    from bindings import inprocess
def lazy():
    from services.settings import ServiceSettings
    return importlib.import_module("services.catalog.app"), ServiceSettings
"""
    refs = module_level_imports(source, "shop/catalog/router.py")
    assert [(ref.base, ref.names) for ref in refs] == [
        ("__future__", ("annotations",)),
        ("importlib", ()),
        ("typing", ("TYPE_CHECKING",)),
        ("shop.kernel.db", ()),
        ("shop.catalog", ("sibling",)),
        ("shop.kernel", ("settings",)),
        ("gateway.app", ("create_app",)),
        ("launcher", ()),
        ("bindings", ("inprocess",)),
    ]


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("gateway/", ["gateway/app.py", "gateway/a/b.py"], ["gateways/x.py", "gateway"]),
        ("docs/kata/02-*.md", ["docs/kata/02-catalog.md"], ["docs/kata/02-x/y.md"]),
        ("tests/**/test_*.py", ["tests/test_a.py", "tests/a/b/test_c.py"], ["tests/a/c.py"]),
        ("Dockerfile", ["Dockerfile"], ["docker/Dockerfile", "Dockerfile.dev"]),
        ("tests/kata/test_data*.py", ["tests/kata/test_data_move.py"], ["tests/kata/x.py"]),
    ],
)
def test_manifest_globs(glob: str, matches: list[str], misses: list[str]) -> None:
    regex = glob_regex(glob)
    assert all(regex.fullmatch(path) for path in matches)
    assert not any(regex.fullmatch(path) for path in misses)


def test_one_branch_per_step(made: Made) -> None:
    assert sorted(made.shas) == NAMES
    for name in NAMES:
        assert "created" in line_of(made.output, name)


def test_manifest_and_imports_agree(made: Made) -> None:
    """No file is moved later than the manifest says by a module-level import: otherwise an
    early step's file imports a later step's module (make it lazy, or tune the manifest)."""
    plan = plan_of(made.repo)
    pulled = [f"{p.entry.path}: step {p.listed} -> {p.step}: {p.detail}" for p in plan.pulled()]
    assert not pulled, "\n".join(pulled)
    assert not plan.warnings, plan.warnings
    stale = [f"steps.{number}: {glob}" for number, glob in plan.unmatched]
    assert not stale, f"manifest globs that match no file: {stale}"


def test_each_step_adds_only_its_files(made: Made) -> None:
    plan = plan_of(made.repo)
    first = git(made.repo, "ls-tree", "-r", "--name-only", "--full-tree", STEPS[0].branch)
    assert set(first.splitlines()) == {p.entry.path for p in plan.files(0)}
    for before, step in itertools.pairwise(STEPS):
        diff = git(
            made.repo, "diff", "--name-status", "--no-renames", before.branch, step.branch
        ).splitlines()
        statuses = {line.split("\t", 1)[0] for line in diff}
        assert statuses <= {"A"}, f"step {step.number} changes earlier files: {diff}"
        added = {line.split("\t", 1)[1] for line in diff}
        assert added == {p.entry.path for p in plan.files(step.number)}
        for path in added:
            hit = plan.manifest.match(path)
            listed = hit[0] if hit else 0
            assert listed == step.number or path.endswith("__init__.py"), (
                f"{path} arrives at step {step.number}, the manifest says {listed}"
            )
        listed_here = {
            p.entry.path
            for p in plan.placements.values()
            if (hit := plan.manifest.match(p.entry.path)) and hit[0] == step.number
        }
        assert listed_here <= added, listed_here - added


def test_the_last_step_is_head(made: Made) -> None:
    last = STEPS[-1].branch
    assert git(made.repo, "rev-parse", f"{last}^{{tree}}") == git(
        made.repo, "rev-parse", "HEAD^{tree}"
    )


def test_commits_chain_with_trailers(made: Made) -> None:
    date = git(made.repo, "log", "-1", "--format=%cd", "--date=raw", "HEAD")
    parent = None
    for step in STEPS:
        sha = made.shas[step.branch]
        parents = git(made.repo, "rev-list", "--parents", "-n", "1", sha).split()[1:]
        assert parents == ([parent] if parent else []), step.branch
        body = git(made.repo, "log", "-1", "--format=%B", sha)
        assert body.splitlines()[0] == f"Kata step {step.number}: {step.title}"
        assert body.rstrip().endswith(f"Kata-Step: {step.number}\nKata-Source: {made.head}"), body
        assert git(made.repo, "log", "-1", "--format=%cd", "--date=raw", sha) == date
        assert git(made.repo, "log", "-1", "--format=%ad", "--date=raw", sha) == date
        parent = sha


def test_rerun_changes_nothing(made: Made) -> None:
    output = ok(kata(made.repo))
    assert heads(made.repo) == made.shas
    for name in NAMES:
        assert "up to date" in line_of(output, name)


def test_same_head_same_commits(made: Made) -> None:
    ok(kata(made.repo, "--prefix", "again/"))
    again = heads(made.repo, "again/")
    assert {name.replace("again/", "kata/"): sha for name, sha in again.items()} == made.shas


def test_check_writes_no_branch(made: Made) -> None:
    output = ok(kata(made.repo, "--check", "--prefix", "checked/"))
    assert heads(made.repo, "checked/") == {}
    for step in STEPS:
        assert re.search(rf"^step {step.number}  {re.escape(step.branch)} +adds", output, re.M)
    assert "closure:" in output
    assert "no branch was written" in output
    assert re.search(r"^structure: step 6  kata/06-services +ok$", output, re.M), output


def test_learner_commits_survive_and_force_keeps_a_backup(fresh: Path, tmp_path: Path) -> None:
    name = STEPS[2].branch
    generated = heads(fresh)[name]
    work = tmp_path / "work"
    git(fresh, "worktree", "add", "--quiet", str(work), name)
    (work / "my-notes.md").write_text("what I tried\n")
    git(work, "add", "my-notes.md")
    git(work, "-c", "user.name=Learner", "-c", "user.email=l@example.com", "commit", "-qm", "mine")
    mine = git(work, "rev-parse", "HEAD")
    git(fresh, "worktree", "remove", str(work))

    output = ok(kata(fresh))
    assert heads(fresh)[name] == mine
    assert "KEPT" in line_of(output, name)
    assert "1 commit of your own" in line_of(output, name)
    assert "--force" in line_of(output, name)
    for other in NAMES:
        if other != name:
            assert "up to date" in line_of(output, other)

    output = ok(kata(fresh, "--force"))
    assert heads(fresh)[name] == generated
    backups = heads(fresh, "kata/backup/")
    assert list(backups.values()) == [mine], backups
    (backup,) = backups
    assert re.fullmatch(r"kata/backup/02-catalog-\d{8}-\d{6}", backup)
    assert backup in line_of(output, name)


def test_a_new_head_moves_generated_branches_but_not_checked_out_ones(
    fresh: Path, tmp_path: Path
) -> None:
    before = heads(fresh)
    lead = ["-c", "user.name=Lead", "-c", "user.email=lead@example.com"]
    git(fresh, *lead, "commit", "--allow-empty", "-qm", "main moves on")
    busy = STEPS[1].branch
    git(fresh, "worktree", "add", "--quiet", str(tmp_path / "busy"), busy)
    output = ok(kata(fresh))
    after = heads(fresh)
    assert after[busy] == before[busy]
    assert "checked out" in line_of(output, busy)
    for name in NAMES:
        if name != busy:
            assert "updated" in line_of(output, name)
            assert after[name] != before[name]
    assert git(fresh, "rev-parse", f"{STEPS[-1].branch}^{{tree}}") == git(
        fresh, "rev-parse", "HEAD^{tree}"
    )


def test_uncommitted_changes_are_left_out_with_a_note(fresh: Path) -> None:
    (fresh / "scratch.txt").write_text("not committed\n")
    output = ok(kata(fresh))
    assert "uncommitted changes" in output
    assert "scratch.txt" not in git(fresh, "ls-tree", "-r", "--name-only", STEPS[-1].branch)
    assert (fresh / "scratch.txt").read_text() == "not committed\n"


def test_clear_refusals(made: Made, tmp_path: Path) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    proc = kata(outside, pythonpath=made.repo)
    assert proc.returncode == 2
    assert "not inside a git working tree" in proc.stderr

    unborn = tmp_path / "unborn"
    git(tmp_path, "init", "--quiet", str(unborn))
    proc = kata(unborn, pythonpath=made.repo)
    assert proc.returncode == 2
    assert "no commit yet" in proc.stderr

    on_branch = tmp_path / "on-branch"
    git(made.repo, "worktree", "add", "--quiet", "--detach", str(on_branch), STEPS[3].branch)
    proc = kata(on_branch, pythonpath=on_branch)
    assert proc.returncode == 2
    assert "generated kata commit" in proc.stderr
    git(made.repo, "worktree", "remove", str(on_branch))

    proc = kata(made.repo, "--prefix", "no..good/")
    assert proc.returncode == 2
    assert "--prefix" in proc.stderr


def test_every_step_is_whole(made: Made) -> None:
    """Each step's tree alone, read from git in memory (seconds): its module-level imports
    resolve, its topology exists and loads, and the apps that topology names (and the
    gateway's) resolve in it. The contract suite on each step's own tree is the slow check:
    ``make kata-verify``."""
    repository = Git(made.repo)
    started = time.monotonic()
    found = check_steps(repository, plan_of(made.repo))
    took = time.monotonic() - started
    assert sorted(found) == [step.number for step in STEPS]
    problems = [f"step {n}: {p}" for n, ps in found.items() for p in ps]
    assert not problems, "\n".join(problems)
    assert took < STRUCTURE_SECONDS, f"the structural check took {took:.1f} s"


def test_the_structural_check_names_what_a_step_lacks() -> None:
    step = STEPS[2]
    topology = step.topology.as_posix()
    blobs = {
        topology: b"""name = "x"
[gateway]
port = 8000
[services.monolith]
app = "monolith.app:create_app"
contexts = ["identity"]
port = 8100
[services.catalog]
app = "services.catalog.app:create_app"
contexts = ["catalog"]
port = 8120
""",
        "monolith/__init__.py": b"",
        "monolith/__main__.py": b"",
        "monolith/app.py": b"from shop.kernel import db\ndef build_app(): ...\n",
        "services/__init__.py": b"",
        "services/catalog/__init__.py": b"",
        "services/catalog/app.py": b"def create_app(): ...\n",
        "shop/__init__.py": b"",
        "shop/kernel/__init__.py": b"",
        "shop/kernel/db.py": b"",
    }
    reference = ModuleIndex.of([*blobs, "gateway/__init__.py", "gateway/app.py"])
    problems = check_tree(step, [p for p in blobs if p != "shop/kernel/db.py"], blobs, reference)
    assert problems == [
        "monolith/app.py:1 `from shop.kernel import db`: no module shop.kernel.db",
        f"{topology} [services.monolith]: app 'monolith.app:create_app': monolith/app.py"
        " defines no create_app",
        f"{topology} [services.catalog]: app 'services.catalog.app:create_app': no"
        " services/__main__.py to run it with",
        f"{topology} [gateway]: app 'composition.gateway:create_app': no module"
        " composition.gateway in this step",
    ]
    assert check_tree(step, ["monolith/app.py"], blobs, reference)[-1] == (
        f"topology {step.topology} is missing"
    )
