"""``--verify``: each step's tree exported alone, checked, and the contract suite run in it.

The slow check of the kata's branches (minutes: ``make kata-verify``). Each step's tree is
exported to a temporary directory; the structural check of kata/structure.py runs on it,
then ``pytest tests/contract --target tests.targets:step_<k>`` in that tree alone.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kata.commits import Built
from kata.git import Git
from kata.imports import ModuleIndex
from kata.learner import branch_name
from kata.plan import Plan
from kata.steps import STEPS
from kata.structure import check_tree
from launcher.processes import kill_group

CONTRACT_TIMEOUT = 900.0
"""Default seconds one step's contract run may take under ``--verify``."""
CONTRACT_ARGS = ("tests/contract", "-q", "-p", "no:cacheprovider")
"""The contract run of ``--verify``, after ``python -m pytest``; ``--target`` follows."""


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
        kill_group(proc)
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
            paths = [e.path for e in plan.tree(item.number)]
            wanted = [p for p in paths if p.endswith(".py") or p == step.topology.as_posix()]
            blobs = {path: (target / path).read_bytes() for path in wanted}
            verdict = Verdict(item.number, len(paths))
            verdict.problems += check_tree(step, paths, blobs, reference)
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
