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

``--check`` writes no branch: it lists each step's files and checks every step's tree in
seconds (every module-level project import resolves in it, its topology file exists, and
the apps its topology names resolve in it). ``--verify`` exports each step's tree and runs
the contract suite against the step's in-process target (``tests.targets:step_<k>``) in it.

The parts: kata/git.py (plumbing), kata/manifest.py, kata/imports.py, kata/plan.py (which
step each file arrives at), kata/commits.py, kata/learner.py (moving branches safely),
kata/structure.py (the fast check), kata/verify.py (the contract runs); this module is the
command and its report.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from kata.commits import build
from kata.git import BranchError, Git, open_repository, read_source
from kata.learner import DEFAULT_PREFIX, check_prefix, update_branches
from kata.manifest import MANIFEST, load_manifest
from kata.plan import Plan, make_plan
from kata.steps import STEPS
from kata.structure import check_steps
from kata.verify import CONTRACT_TIMEOUT, verify


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
    sound = True
    if args.check:
        print("\n".join(report(plan, listing=True)))
        started = time.monotonic()
        sound = structure(git, plan)
        print(f"structure: checked in {time.monotonic() - started:.1f} s")
        print("--check: no branch was written")
    else:
        print("\n".join(update_branches(git, plan, built, args.prefix, args.force)))
        print(
            "\n".join(line for line in report(plan, listing=False) if not line.startswith("step "))
        )
    if args.verify:
        ok = verify(git, plan, built, args.python, args.timeout, args.jobs, args.prefix)
        print("verify: every step passed" if ok else "verify: FAILED (see above)")
        return 0 if ok and sound else 1
    return 0 if sound else 1


def structure(git: Git, plan: Plan) -> bool:
    """Print the fast check of every step's tree (kata/structure.py); whether all pass."""
    found = check_steps(git, plan)
    for number, problems in found.items():
        state = "ok" if not problems else f"{len(problems)} problem(s)"
        print(f"structure: step {number}  {STEPS[number].branch:<20} {state}")
        print("\n".join(f"    - {problem}" for problem in problems), end="\n" if problems else "")
    return not any(found.values())


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
        help="build the trees, print each step's files and the closure, and check every step's"
        " tree (imports, topology, its apps: seconds); write no branch",
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
