"""The learner's branches are safe: a kata branch moves only while it is the command's own.

A branch that still points at a generated commit (our trailers all the way down to step 0,
one source, no amend or rebase) is moved to the new commit; one with commits of the
learner's own on top, or pointing elsewhere, is kept unless ``--force``, which first keeps
the old tip as a backup branch; a branch checked out in a worktree is never moved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from kata.commits import Built
from kata.git import SOURCE_TRAILER, STEP_TRAILER, BranchError, Git
from kata.plan import Plan
from kata.steps import STEPS, Step

DEFAULT_PREFIX = "kata/"
LEARNER_SEARCH_DEPTH = 100
"""How far back a kept branch is searched for the generated commit the learner built on."""


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
