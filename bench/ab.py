"""``python -m bench.ab --a DIR --b DIR``: one topology from two checkouts, interleaved.

Before/after comparisons on a shared machine drift with the load of everything else; this
starts the same topology (default: the services) from two checkouts of the repository
(``git worktree add``) side by side, each on its own free ports and scratch databases, pins
every server to CPU 0 and Locust to CPU 1, then alternates short Locust runs between them
(A B, B A, A B, ...), so both sides see the same background on average. Per side and
scenario it prints the medians over the rounds: requests/s, p50 and server CPU microseconds
per request by process group, and the ratio B / A.

Scenarios: the shopper mix through the entry (the gateway), and ``GET /products/{id}``
straight to the catalog service (``product-catalog``: catalog's own cost of a product view,
its call to inventory included). The workload (``loadtests/``) is this checkout's for both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench import procs
from bench import report as rep
from bench.deploy import REPO, Deployment, forget_broker, say, server_env
from bench.plans import Plan
from bench.runner import Bench
from launcher import Launcher, Timeouts, topologies
from shop.identity.tokens import write_key_file


@contextmanager
def served_from(label: str, checkout: Path, topology_file: str, out: Path) -> Iterator[Launcher]:
    """The topology started by the launcher from ``checkout``'s code (the cwd of every
    process), on free ports and scratch SQLite databases under ``out``; stopped afterwards."""
    scratch = out / "scratch" / label
    scratch.mkdir(parents=True, exist_ok=True)
    key_file = scratch / "signing-key.pem"
    key_file.unlink(missing_ok=True)
    write_key_file(key_file)  # 0600: identity refuses a key file others can read
    env = server_env(scratch, key_file)
    topology = topologies.resolve(checkout / topology_file)
    topology = topologies.relocate(topology, offset=topologies.free_port_offset(topology))
    launcher = Launcher(
        topology,
        databases={name: f"sqlite+aiosqlite:///{scratch / name}.db" for name in topology.services},
        run_dir=scratch / "run",
        env=env,
        cwd=checkout,
        timeouts=Timeouts(migrate=120, ready=60, stop=10, seed=600),
        progress=lambda line: say(f"{label}: {line}"),
    )
    launcher.start_all()
    try:
        yield launcher
    finally:
        launcher.stop_all()
        if launcher.topology.bus == "rabbitmq":
            forget_broker(env)


@contextmanager
def side(
    label: str, checkout: Path, topology_file: str, out: Path, products: int
) -> Iterator[Deployment]:
    """The topology served from ``checkout`` (its code: cwd of every process), seeded."""
    with served_from(label, checkout, topology_file, out) as launcher:
        url = launcher.gateway_url or next(iter(launcher.urls.values()))[0]
        subprocess.run(  # noqa: S603 (our interpreter, the checkout's module)
            [
                sys.executable,
                "-m",
                "loadtests.seed",
                "--base-url",
                url,
                "--products",
                str(products),
            ],
            cwd=checkout,
            env=server_env(out / "scratch" / label, out / "scratch" / label / "signing-key.pem"),
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
        deployment = Deployment(label, url, launcher.pids)
        if "catalog" in launcher.urls:
            deployment.extra_urls["catalog"] = launcher.urls["catalog"][0]
        yield deployment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (e.g. before)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (e.g. after)")
    parser.add_argument("--topology", default="topologies/services.toml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=15, help="length of each run")
    parser.add_argument("--users", type=int, default=8, help="shopper users (0: no shopper runs)")
    parser.add_argument("--product-users", type=int, default=16, help="0: no product runs")
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or REPO / "bench" / "results" / f"ab-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    plan = Plan(
        ladder=(args.users,),
        seconds=args.seconds,
        repeats=1,
        warmup_seconds=5,
        products=args.products,
    )
    bench = Bench(out, plan, pinned)
    started = time.monotonic()
    say(f"A = {args.a}, B = {args.b}; results in {out}; load {procs.load_average()}")
    with ExitStack() as stack:
        sides = [
            stack.enter_context(side(label, path.resolve(), args.topology, out, args.products))
            for label, path in (("A", args.a), ("B", args.b))
        ]
        for deployment in sides:
            bench.prepare(deployment)
        for round_ in range(1, args.rounds + 1):
            for deployment in sides if round_ % 2 else reversed(sides):
                if args.users:
                    bench.locust(
                        deployment,
                        scenario="shopper",
                        users=args.users,
                        seconds=args.seconds,
                        repeat=round_,
                    )
                catalog = deployment.extra_urls.get("catalog")
                if catalog and args.product_users:
                    bench.locust(
                        deployment,
                        scenario="product",
                        users=args.product_users,
                        seconds=args.seconds,
                        repeat=round_,
                        host=catalog,
                        label="product-catalog",
                    )
    rows = rep.summarise(bench.steps)
    say(f"done in {time.monotonic() - started:.0f} s; load {procs.load_average()}")
    print(
        f"medians of {args.rounds} interleaved rounds x {args.seconds} s; A = {args.a},"
        f" B = {args.b}"
    )
    for scenario in ("shopper", "product-catalog"):
        a, b = rep.select(rows, "A", scenario), rep.select(rows, "B", scenario)
        if not a or not b:
            continue
        components = sorted(set(a[0].cpu_us) | set(b[0].cpu_us))
        print(f"\n{scenario} ({a[0].users} users), server CPU us/request by process group:")
        print("| side | req/s | p50 ms | failed | CPU us/req | " + " | ".join(components) + " |")
        print("|---" * (5 + len(components)) + "|")
        for name, row in (("A", a[0]), ("B", b[0])):
            cells = [name, f"{row.rps:,.0f}", f"{row.p50:g}", str(row.failures)]
            cells += [f"{row.cpu_us_total:,.0f}"]
            cells += [f"{row.cpu_us.get(c, 0.0):,.0f}" for c in components]
            print("| " + " | ".join(cells) + " |")
        cells = ["B / A", f"{rep.ratio(b[0].rps, a[0].rps):.2f}"]
        cells += [f"{rep.ratio(b[0].p50, a[0].p50):.2f}", ""]
        cells += [f"{rep.ratio(b[0].cpu_us_total, a[0].cpu_us_total):.2f}"]
        cells += [
            f"{rep.ratio(b[0].cpu_us.get(c, 0), a[0].cpu_us.get(c, 0)):.2f}" for c in components
        ]
        print("| " + " | ".join(cells) + " |")
    spread = {
        (row.topology, row.scenario): statistics.pstdev(
            [s.rps for s in bench.steps if (s.topology, s.scenario) == (row.topology, row.scenario)]
        )
        for row in rows
    }
    print(
        "\nreq/s spread over the rounds (std dev): "
        + ", ".join(f"{t} {s} {v:,.0f}" for (t, s), v in spread.items())
    )
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
