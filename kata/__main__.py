"""python -m kata steps | up | migrate-data | branches (``--help`` on each says more).

``up --step N`` is what ``make up STEP=N`` runs: it brings the kata's data (var/kata/, or
shopkata_kata_<service> on PostgreSQL) to step N, then runs step N's topology with the
launcher in the foreground. Going forward, the contexts extracted up to step N move from
the monolith's database to their services' (verified, recorded; a no-op once done); going
back, the contexts of later steps move back into the monolith first (the rollback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from kata.steps import DATA_NAME, LAST, STEPS, Step, monolith_contexts, step


def _steps(_args: argparse.Namespace) -> int:
    for each in STEPS:
        served = ", ".join(monolith_contexts(each.number)) or "nothing (retired)"
        print(f"{each.number}  {each.branch:<18} {each.topology}  monolith serves: {served}")
    return 0


def _commands() -> list[ModuleType]:
    """The subcommand modules this checkout has: a kata branch before step 2 has no
    ``kata.data`` yet (nothing has been extracted, so no data moves)."""
    found = []
    for name in ("kata.data", "kata.branches"):
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


def _up(args: argparse.Namespace) -> int:
    try:
        target = step(args.step)
    except ValueError as exc:
        print(f"error: {exc} (python -m kata steps lists them)", file=sys.stderr)
        return 2
    database = ["--database", args.database] if args.database else []
    print(f"kata step {target.number}: {target.title} ({target.topology})", flush=True)
    if not target.topology.exists():
        print(f"error: {target.topology} is not in this checkout", file=sys.stderr)
        return 2
    if not any(module.__name__ == "kata.data" for module in _commands()):
        # A branch of the kata's first steps: no context has left, no data moves.
        return _launch(args, target, database)
    # Back first: a later step's contexts return to the monolith (a no-op if never moved).
    for later in reversed(STEPS[target.number + 1 :]):
        if later.extracts and later.topology.exists():
            code = main(
                [
                    "migrate-data",
                    "--step",
                    str(later.number),
                    "--reverse",
                    "--if-present",
                    *database,
                ]
            )
            if code:
                return code
    if target.number:
        code = main(
            ["migrate-data", "--step", str(target.number), "--up-to", "--if-present", *database]
        )
        if code:
            return code
    return _launch(args, target, database)


def _launch(args: argparse.Namespace, target: Step, database: list[str]) -> int:
    command = [
        sys.executable,
        "-m",
        "launcher",
        "up",
        "--topology",
        str(target.topology),
        "--data",
        DATA_NAME,
        "--port",
        str(args.port),
        *database,
        *(["--replicas", args.replicas] if args.replicas else []),
        *(["--no-seed"] if args.no_seed else []),
    ]
    print("$ " + " ".join(command), flush=True)
    sys.stdout.flush()
    # The launcher takes this process's place: Ctrl-C and SIGTERM reach it directly.
    os.execv(sys.executable, command)  # noqa: S606 (our interpreter, our module)
    return 0  # not reached: execv returns only by raising


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kata", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("steps", help="list the steps").set_defaults(run=_steps)
    up = commands.add_parser(
        "up",
        help="bring the kata's data to a step and run that step on :8000 (make up STEP=n)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("--step", required=True, help=f"the kata step, 0..{LAST}")
    up.add_argument("--port", type=int, default=8000, help="where clients go (default 8000)")
    up.add_argument("--database", default=None, help="sqlite (default), postgres or a URL")
    up.add_argument("--replicas", default=None, help='replicated services, "catalog=2"')
    up.add_argument("--no-seed", action="store_true", help="do not load the demo catalog")
    up.set_defaults(run=_up)
    for module in _commands():
        module.add_command(commands)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
