"""The manifest of the kata's branches (kata/manifest.toml): which files arrive at which step.

Per step 1..6, path globs relative to the repository root: ``*`` and ``?`` stay within a
path segment, ``**`` spans segments, a trailing ``/`` means everything below. A file takes
the first step whose globs match it; a file no glob matches belongs to step 0.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from kata.git import BranchError, Git, Source, read_blobs
from kata.steps import LAST

MANIFEST = "kata/manifest.toml"


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
