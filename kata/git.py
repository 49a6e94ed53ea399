"""Git plumbing for the kata's branches: one repository, HEAD's files and their contents.

Every git command runs with a bounded timeout in the repository given, never touching the
user's working tree, index or current branch; a failure becomes a :class:`BranchError`,
printed as one message. ``STEP_TRAILER`` and ``SOURCE_TRAILER`` are the trailers every
generated commit carries (kata/commits.py writes them; HEAD must not be built on one).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

STEP_TRAILER = "Kata-Step"
SOURCE_TRAILER = "Kata-Source"
GIT_TIMEOUT = 120.0
"""Seconds any single git command may take (they take milliseconds on this repository)."""


class BranchError(Exception):
    """Something the user can fix; printed as one message, without a traceback."""


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
