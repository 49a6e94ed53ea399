"""``python -m bench``: the shopper benchmark, monolith against services, in one run.

It starts both topologies natively on 127.0.0.1 (known pids, scratch databases under the
results folder, ports away from :8000), seeds each catalog, warms each up, then steps Locust
(closed loop, no think time) through a ladder of user counts, repeated, each step against
the monolith and the services in turn (the order alternating), so that the ratios compare
them under the same background load. Servers are pinned to CPU 0 and Locust to CPU 1 when
the machine has two or more CPUs.
Every step records Locust's CSVs and the CPU seconds of every server process, by component.
Then come the reference ceilings (``/healthz``; ``GET /products/{id}`` straight to catalog
against through the gateway) and, in the full run, the scaling comparison. With ``--kata``
(or ``--steps 1,2,4``) the same shopper ladder and fixed-rate step also run against the
topology of each step of the kata (``kata.steps``), one after the other. The report
(``report.md``, PNG plots, ``steps.json``) goes to ``bench/results/<timestamp>/``.

The parts: bench/plans.py (how much to run), bench/deploy.py (starting and seeding each
topology), bench/load.py (Locust's command line), bench/runner.py (the measuring),
bench/document.py (the report); this module is the command and the comparison.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import procs
from bench.deploy import REPO, monolith, reference_app, say, services
from bench.document import kata_settings, machine, write_report
from bench.load import SERVER_CPUS
from bench.plans import FULL, QUICK, Plan, parse_steps, parse_users
from bench.runner import Bench, KataRun
from kata import steps as kata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short ladder (< 3 min)")
    parser.add_argument("--users", help="ladder, comma-separated (e.g. 8,16,32)")
    parser.add_argument("--seconds", type=int, help="length of each ladder step")
    parser.add_argument("--repeats", type=int, help="repeats of the ladder")
    parser.add_argument("--products", type=int, help="products to seed")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling comparison")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record a py-spy flame graph (SVG) of every server process under the shopper"
        " mix, in an extra unrecorded run: <results>/profiles/",
    )
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<ts>)")
    kata_options = parser.add_argument_group(
        "kata steps", "the same ladder against the topology of each step of the kata"
    )
    kata_options.add_argument("--kata", action="store_true", help="every step, 0 to 7")
    kata_options.add_argument("--steps", help="some steps: 1,2,4 or 2-5")
    kata_options.add_argument(
        "--only-steps",
        action="store_true",
        help="skip the monolith/services comparison (its targets then compare step 0 and 6)",
    )
    kata_options.add_argument(
        "--step-users", help="the steps' ladder (default: the ladder; --quick: 8)"
    )
    kata_options.add_argument(
        "--step-seconds", type=int, help="length of each step run (default: --seconds; quick: 6)"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides: dict[str, object] = {}
    try:
        if args.users:
            overrides["ladder"] = parse_users(args.users)
        if args.step_users:
            overrides["step_ladder"] = parse_users(args.step_users)
        chosen = parse_steps(args.steps) if args.steps else []
    except ValueError as exc:
        parser.error(str(exc))
    if args.products is not None and args.products < 100:
        parser.error("--products must be 100 or more: the product-view runs ask for ids 1-100")
    if args.kata:
        chosen = list(kata.STEPS)
    if args.only_steps and not chosen:
        parser.error("--only-steps needs --kata or --steps")
    for name in ("seconds", "repeats", "products", "step_seconds"):
        if getattr(args, name):
            overrides[name] = getattr(args, name)
    if args.no_scaling or args.only_steps:
        overrides["scaling"] = False
    if overrides:
        plan = Plan(**{**asdict(plan), **overrides})
    out = args.out or REPO / "bench" / "results" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    info = machine(plan, pinned)
    if chosen:
        info["kata steps"] = (
            ", ".join(str(step.number) for step in chosen) + "; " + kata_settings(plan)
        )
    started = time.monotonic()
    load = procs.load_average()
    say(f"results in {out}; {info['cpu']}; pinning: {info['pinning']}")
    bench = Bench(out, plan, pinned, profiling=args.profile)

    half_rate = None if args.only_steps else compare(bench)
    kata_runs: list[KataRun] = []
    if chosen:
        same = plan.kata_ladder == plan.ladder and plan.kata_seconds == plan.seconds
        measured = {0: "monolith", kata.LAST: "services"} if same and half_rate else {}
        kata_runs = bench.kata(chosen, half_rate, measured)

    summary = write_report(bench, info, started, load, kata_runs)
    say(f"done in {time.monotonic() - started:.0f} s; report {out / 'report.md'}")
    print(summary, flush=True)
    if bench.failures:
        say("runs with failed requests: " + "; ".join(bench.failures))
        return 1
    return 0


def compare(bench: Bench) -> float:
    """The monolith against the services (and, in the full run, scaling); returns the
    fixed rate: half the monolith's best throughput."""
    out, plan = bench.out, bench.plan
    # Both up at once, both pinned to the servers' core, measured in turns: every step of the
    # ladder runs against the monolith and the services back to back (the order alternating),
    # so the ratios compare the two under the same background load. One after the other, a
    # drift of the shared machine's load between the two halves moved them by up to 15%.
    with monolith(out, plan) as mono, services(out, plan) as serv:
        bench.prepare(mono)
        bench.prepare(serv)
        bench.ladders([mono, serv])
        half_rate = bench.best_rps(mono.name) / 2
        say(f"fixed rate: half the monolith's best throughput, {half_rate:,.0f} req/s")
        bench.fixed_rates([mono, serv], half_rate)
        assert mono.database is not None
        with reference_app(out, mono.database) as ref:
            if bench.pinned:
                procs.pin(ref.pids()["reference"], SERVER_CPUS)
            # The shop and the bare stack take turns on the same core too.
            catalog = serv.extra_urls["catalog"]
            bench.reference(
                [
                    (mono, "health", "health", mono.url),
                    (ref, "health", "health", ref.url),
                    (serv, "health", "health", serv.url),
                    (mono, "product", "product", mono.url),
                    (ref, "product", "product", ref.url),
                    (serv, "product-catalog", "product", catalog),
                    (serv, "product-gateway", "product", serv.url),
                ]
            )
            bench.remember_memory(ref)
        bench.profile(mono, max(plan.ladder))
        bench.profile(serv, max(plan.ladder))
        bench.remember_memory(mono)
        bench.remember_memory(serv)

    if plan.scaling:
        replicas = plan.hot_replicas
        with services(out, plan, replicas=replicas) as scaled:
            count = sum(len(pids) for pids in scaled.groups.values())
            bench.prepare(scaled)
            bench.reference([(scaled, f"scaling-{count}proc", "shopper", scaled.url)])
            bench.remember_memory(scaled)
        with monolith(out, plan, workers=count) as workers:
            workers.name = f"monolith-w{count}"
            bench.prepare(workers)
            bench.reference([(workers, f"scaling-{count}proc", "shopper", workers.url)])
            bench.remember_memory(workers)
    return half_rate
