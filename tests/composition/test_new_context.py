"""A seventh context costs its own folder and a line or a table in each topology running it.

The test copies the repository's files to a scratch tree, adds the reviews context
(``tests/fixtures/reviews``) as ``shop/reviews/``, names it in the monolith's topology (one
line) and gives it a service of its own in the services topology (one table), then asks git
what changed and serves both topologies in process (``tests.fixtures.serve_reviews``): the
monolith on its one database, and the services with the gateway routing ``/reviews``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "reviews"
MONOLITH = "topologies/kata-00-monolith.toml"
SERVICES = "topologies/services.toml"
SERVICE_TABLE = '\n[services.reviews]\ncontexts = ["reviews"]\nport = 8170\n'
RUN_TIMEOUT = 180.0

# Scratch trees and in-process apps on SQLite: the PostgreSQL run does not repeat it.
pytestmark = pytest.mark.once


def _git(tree: Path, *args: str) -> str:
    identity = ["-c", "user.name=shopkata", "-c", "user.email=shopkata@example.invalid"]
    done = subprocess.run(  # noqa: S603 (git, our arguments)
        ["git", *identity, *args],  # noqa: S607 (git from PATH)
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


def _scratch_tree(tmp: Path) -> Path:
    """The repository's files as they are in this checkout (docs and images left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode()
    tree = tmp / "shop"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if name.startswith("docs/") or not source.is_file():
            continue
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, tree / name)
    _git(tree, "init", "-q")
    _git(tree, "add", "-A")
    _git(tree, "commit", "-q", "-m", "six contexts")
    return tree


def _add_reviews(tree: Path) -> None:
    shutil.copytree(
        FIXTURE, tree / "shop" / "reviews", ignore=shutil.ignore_patterns("__pycache__")
    )
    monolith = tree / MONOLITH
    text = monolith.read_text()
    assert text.count('"payments"]') == 1
    monolith.write_text(text.replace('"payments"]', '"payments", "reviews"]'))
    with (tree / SERVICES).open("a") as services:
        services.write(SERVICE_TABLE)


def _serve(tree: Path, topology: str) -> dict[str, object]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "SHOP_"))
    }
    done = subprocess.run(  # noqa: S603 (our interpreter, our module)
        [sys.executable, "-m", "tests.fixtures.serve_reviews", topology],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_seventh_context_is_its_folder_plus_one_entry_per_topology(tmp_path: Path) -> None:
    tree = _scratch_tree(tmp_path)
    _add_reviews(tree)

    changed = sorted(_git(tree, "status", "--porcelain", "--untracked-files=normal").splitlines())
    assert changed == [f" M {MONOLITH}", f" M {SERVICES}", "?? shop/reviews/"]
    numstat = {
        line.split("\t")[2]: tuple(line.split("\t")[:2])
        for line in _git(tree, "diff", "--numstat").splitlines()
    }
    assert numstat == {MONOLITH: ("1", "1"), SERVICES: ("4", "0")}

    for topology in (MONOLITH, SERVICES):
        seen = _serve(tree, topology)
        assert seen["created"] == {**seen["listed"][0]}  # type: ignore[index]
        assert seen["anonymous"] == [401, "application/problem+json"], topology
        assert seen["invalid"] == [422, "application/problem+json"], topology
        assert seen["documented"] == ["/reviews"], topology
