"""The kata's commits: one tree and one commit per step, built with git plumbing.

The commits are built on a temporary index (no ref, working tree or index of the user's is
touched), with the dates of HEAD's commit and one identity, so the same HEAD always yields
the same commits. Each message describes its step and ends with the trailers
``Kata-Step: <n>`` and ``Kata-Source: <sha of HEAD>``.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from kata.git import SOURCE_TRAILER, STEP_TRAILER, Git
from kata.plan import Plan
from kata.steps import STEPS, monolith_contexts

FALLBACK_NAME = "shopkata kata"
FALLBACK_EMAIL = "kata@shopkata.invalid"


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
