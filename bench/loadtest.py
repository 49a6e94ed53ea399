"""``python -m bench.loadtest``: the shopper workload against any URL, and the CI smoke.

    python -m bench.loadtest --host http://127.0.0.1:8000                 # headless, 60 s
    python -m bench.loadtest --host URL --ui                              # web UI on :8089
    python -m bench.loadtest --host URL --workers 4 -u 200 -t 2m          # master + 4 workers
    python -m bench.loadtest --smoke                                      # CI: both topologies

Distributed mode starts one Locust master and ``--workers`` worker processes on this
machine (127.0.0.1 only), each with a known pid; the workers are stopped, by pid, when the
master ends. The exit code is Locust's: non-zero when any request failed.

``--smoke`` starts the monolith and the services (scratch databases, free ports, a small
seeded catalog), runs the workload headless for a few seconds against each and fails on
any failed request.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report as rep
from bench.deploy import REPO, monolith, say, services
from bench.load import LOCUSTFILE, locust_command
from bench.plans import Plan
from launcher.processes import free_port, stop_process

SMOKE_PLAN = Plan(ladder=(8,), seconds=10, repeats=1, warmup_seconds=0, products=50)


def _locust() -> str:
    return str(Path(sys.executable).parent / "locust")


def run(args: argparse.Namespace) -> int:
    base = [_locust(), "-f", str(LOCUSTFILE), "--host", args.host]
    load = ["-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.time]
    if args.ui:
        # Users, rate and duration are set in the UI.
        mode = ["--web-host", "127.0.0.1", "--web-port", str(args.web_port)]
        say(f"Locust web UI on http://127.0.0.1:{args.web_port}")
    else:
        mode = ["--headless", *load, "--only-summary", "--exit-code-on-error", "1"]
    if args.csv:
        mode += ["--csv", args.csv, "--csv-full-history"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if args.workers <= 0:
        command = [*base, *mode, *args.extra]
        return subprocess.run(command, cwd=REPO, env=env, check=False).returncode  # noqa: S603
    port = free_port()
    master = [
        *base,
        *mode,
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(args.workers),
        *args.extra,
    ]
    worker = [_locust(), "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1"]
    worker += ["--master-port", str(port)]
    master_process = subprocess.Popen(master, cwd=REPO, env=env)  # noqa: S603
    workers: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(1.0)
        for _ in range(args.workers):
            workers.append(subprocess.Popen(worker, cwd=REPO, env=env))  # noqa: S603
        say(
            f"master pid {master_process.pid}, workers "
            + ", ".join(str(process.pid) for process in workers)
        )
        return master_process.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        stop_process(master_process)
        for process in workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stop_process(process)


def smoke(seconds: int, users: int) -> int:
    """Both topologies, a short headless run each; non-zero on any failed request."""
    out = REPO / "bench" / "results" / f"smoke-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    failed: list[str] = []
    for topology in ("monolith", "services"):
        context = monolith if topology == "monolith" else services
        with context(out, SMOKE_PLAN) as deployment:
            prefix = out / f"{topology}"
            command = locust_command(deployment.url, users, seconds, prefix, pinned=False)
            env = {**os.environ, "LOADTEST_WAIT": "0-0.2", "PYTHONWARNINGS": "ignore"}
            with (out / f"{topology}.log").open("wb") as log:
                code = subprocess.run(  # noqa: S603 (our virtualenv's locust)
                    command,
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=seconds + 60,
                    check=False,
                ).returncode
            stats = rep.read_locust_stats(out / f"{topology}_stats.csv")
            say(
                f"smoke {topology}: {stats['requests']:.0f} requests, {stats['failures']:.0f}"
                f" failed, {stats['rps']:.0f} req/s, exit code {code}"
            )
            if code != 0 or stats["failures"] or not stats["requests"]:
                failed.append(f"{topology} (exit {code}; see {out / f'{topology}.log'})")
    say(f"smoke done in {time.monotonic() - started:.0f} s; results in {out}")
    if failed:
        say("FAILED: " + ", ".join(failed))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__)
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("-u", "--users", type=int, default=20)
    parser.add_argument("-r", "--spawn-rate", type=float, default=5)
    parser.add_argument("-t", "--time", default="60s", help="run time (headless), e.g. 90s, 2m")
    parser.add_argument("--ui", action="store_true", help="Locust's web UI instead of headless")
    parser.add_argument("--web-port", type=int, default=8089)
    parser.add_argument("--workers", type=int, default=0, help="master + this many workers")
    parser.add_argument("--csv", help="CSV prefix for Locust's stats")
    parser.add_argument("--smoke", action="store_true", help="the CI smoke, both topologies")
    parser.add_argument("--smoke-seconds", type=int, default=10)
    parser.add_argument("extra", nargs="*", help="more Locust arguments (after --)")
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke(args.smoke_seconds, 8)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
