"""The benchmark's report: ``report.md`` (machine and settings, the targets, each topology's
ladder, the kata steps, the reference ceilings, capacity projections, memory, plots, flame
graphs), ``steps.json`` with every step measured, and the summary printed at the end.
The tables and plots themselves come from bench/report.py."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata

from bench import procs
from bench import report as rep
from bench.deploy import step_label
from bench.plans import HALF_LOAD, HALF_LOAD_USERS, Plan
from bench.runner import Bench, KataRun
from kata import steps as kata

CAPACITY_RATES = (500, 1_000, 5_000)
"""Requests/s at which the capacity projection says how many cores each component needs."""


def machine(plan: Plan, pinned: bool) -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "cpu": f"{procs.cpu_model()}, {os.cpu_count()} CPUs",
        "pinning": "servers on CPU 0, Locust on CPU 1 (taskset / sched_setaffinity)"
        if pinned
        else "none (fewer than 2 CPUs or --no-pin)",
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": ", ".join(
            f"{name} {version(name)}"
            for name in ("locust", "uvicorn", "fastapi", "starlette", "sqlalchemy", "aiohttp")
        ),
        "database": "SQLite (shop.kernel.sqlite: reads on the event loop, writes on a thread"
        " per connection), one file per service, scratch under the results folder",
        "settings": (
            f"ladder {list(plan.ladder)} users x {plan.seconds} s x {plan.repeats} repeat(s),"
            f" warm-up {plan.warmup_seconds} s, {plan.products} products x 100,000 units,"
            f" reference steps {plan.reference_users} users x {plan.reference_seconds} s x"
            f" {plan.reference_repeats}; the comparison's monolith and services up at once,"
            " measured in turns (each step against one, then the other, alternating);"
            " Locust FastHttpUser, closed loop, no think time;"
            " argon2 time 1, 1 MiB, 1 lane; uvicorn access logs on (as deployed)"
        ),
    }


def kata_settings(plan: Plan) -> str:
    return (
        f"ladder {list(plan.kata_ladder)} users x {plan.kata_seconds} s x {plan.repeats}"
        f" repeat(s), then the fixed rate ({HALF_LOAD_USERS} users) x {plan.kata_seconds} s x"
        f" {plan.reference_repeats}; warm-up {plan.warmup_seconds} s; {plan.products} products"
    )


def lag_section(bench: Bench) -> list[str]:
    """The events' lag at half load (change committed to read model updated), per deployment
    and consumer, from the consumers' inboxes (bench/lag.py)."""
    if not bench.lags:
        return []
    lines = [
        "## Event lag at half load",
        "",
        "From a change's commit in its publisher to the consumer's read model updated, for the"
        " events applied during the half-load step (`occurred_at` to `received_at` of each"
        " consumer's inbox row). In the monolith the bus is in process; between the services"
        " it is RabbitMQ. Target (docs/benchmarks.md): p99 under 250 ms at half load.",
        "",
        "| deployment | consumer | events | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, lags in bench.lags.items():
        lines += [
            f"| {name} | {lag.consumer} | {lag.events} | {lag.p50_ms:.1f} | {lag.p99_ms:.1f}"
            f" | {lag.max_ms:.1f} |"
            for lag in lags
        ]
    return [*lines, ""]


def write_report(
    bench: Bench,
    info: Mapping[str, str],
    started: float,
    load: str,
    kata_runs: Sequence[KataRun] = (),
) -> str:
    rows = rep.summarise(bench.steps)
    # The targets compare the monolith with the services; with the kata steps alone, step 0
    # (the monolith) with step 6 (the services).
    pair = ("monolith", "services")
    if not rep.select(rows, "monolith", "shopper"):
        pair = (step_label(kata.STEPS[0].number), step_label(kata.LAST))
    mono = rep.select(rows, pair[0], "shopper")
    serv = rep.select(rows, pair[1], "shopper")
    direct = next(iter(rep.select(rows, "services", "product-catalog")), None)
    via = next(iter(rep.select(rows, "services", "product-gateway")), None)
    kata_names = {run.topology for run in kata_runs}
    reused = {run.topology for run in kata_runs if run.reused}
    failures = sum(row.failures for row in rows if row.topology not in reused)
    half = (
        next(iter(rep.select(rows, pair[0], HALF_LOAD)), None),
        next(iter(rep.select(rows, pair[1], HALF_LOAD)), None),
    )
    product = (
        next(iter(rep.select(rows, pair[0], "product")), None),
        next(iter(rep.select(rows, "reference", "product")), None),
    )
    targets = rep.evaluate_targets(
        mono,
        serv,
        direct=direct,
        via_gateway=via,
        failures=failures,
        half_load=half,
        product=product,
    )
    targets += [
        rep.Target.at_most(
            f"event lag p99 at half load, {name}: {lag.consumer}",
            lag.p99_ms,
            rep.EVENT_LAG_P99_TARGET_MS,
            f"{lag.events} events, p50 {lag.p50_ms:.1f} ms, max {lag.max_ms:.1f} ms",
            about=rep.SPLIT,
        )
        for name, lags in bench.lags.items()
        if name == pair[1]
        for lag in lags
    ]
    plots = rep.plot(rows, bench.out, list(pair)) if mono or serv else []
    kata_figures = rep.kata_steps(
        rows, [(run.number, run.title, run.topology, run.processes) for run in kata_runs]
    )
    if kata_figures:
        plots.append(rep.plot_kata(kata_figures, bench.out))
    reference = [
        row for row in rows if row.scenario not in ("shopper",) and row.topology not in kata_names
    ]
    parts = [
        f"# Shopper benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "Generated by `python -m bench` (`make bench` / `make bench-quick`). Locust is closed"
        " loop: each user sends its next request when the last one answered, with no think"
        " time, so users = concurrency (except the `half-load` step: a fixed rate of half the"
        " monolith's best throughput, spread over 32 users). Each row is the median of its repeats;"
        " CPU us/request is the user+system CPU of the server processes during the step"
        " (from /proc) divided by the requests of the step.",
        "",
        "## Machine and settings",
        "",
        *(f"- **{key}**: {value}" for key, value in info.items()),
        f"- **load average** at start / end: {load} / {procs.load_average()}",
        f"- **took**: {time.monotonic() - started:.0f} s",
        "",
        "## Targets",
        "",
        rep.targets_table(targets),
        "",
        *lag_section(bench),
    ]
    why = rep.why_missed(targets, mono, serv, product)
    if why:
        parts += [
            "Where the misses come from (this run's figures; the profiles behind them:"
            ' `--profile`, and docs/benchmarks.md, "Where the time went"):',
            "",
            *why,
            "",
        ]
    for topology in ("monolith", "services"):
        ladder = rep.select(rows, topology, "shopper")
        if ladder:
            parts += [f"## {topology}: shopper mix", "", rep.ladder_table(ladder), ""]
    if mono and serv and pair == ("monolith", "services"):
        parts += ["## services / monolith", "", rep.ratio_table(mono, serv), ""]
    if kata_figures:
        fixed = next((step.fixed for step in kata_figures if step.fixed is not None), None)
        rate = f"{fixed.rps:,.0f} req/s achieved at step {kata_figures[0].number}" if fixed else ""
        parts += [
            "## kata steps",
            "",
            "Each step of the kata (`python -m kata steps`) as its own topology, started,"
            " seeded and measured like the services: " + kata_settings(bench.plan) + "."
            " Throughput and CPU are taken at the step's saturation (the first ladder level"
            " within 5% of its best); p50 at the same fixed rate for every step (half the"
            " monolith's best throughput: the comparison's, or without it the first step's;"
            f" {rate}). `x prev` is the ratio to the step before.",
            "",
            rep.kata_table(kata_figures),
            "",
            "Server CPU microseconds per request by process group, at saturation:",
            "",
            rep.kata_cpu_table(kata_figures),
            "",
        ]
        for step in kata_figures:
            ladder = rep.select(rows, step.topology, "shopper")
            if len(ladder) > 1:
                parts += [f"### step {step.number}: shopper ladder", "", rep.ladder_table(ladder)]
                parts.append("")
    if reference:
        parts += [
            "## Reference ceilings and scaling",
            "",
            "`health`: `GET /healthz` of the same server stack (the monolith; for services the"
            " gateway's own). `reference`: the reference app (`bench/reference.py`: FastAPI and"
            " SQLAlchemy on aiosqlite, as their documentation writes it, none of the shop's"
            " layers) serving the same `GET /products/{id}` JSON from the monolith's own"
            " database file, taking turns with the monolith on the same core: what the stack"
            " costs, so the monolith's rows read as a ratio of it. `product-catalog` /"
            " `product-gateway`: anonymous `GET"
            " /products/{id}` straight to the catalog service / through the gateway (the"
            " gateway tax). `scaling`: the shopper mix on the monolith with N workers against"
            " the services with the hot service replicated, equal process count.",
            "",
            rep.reference_table(reference),
            "",
        ]
    for topology in pair:
        top = rep.saturation(rep.select(rows, topology, "shopper"))
        if top is None:
            continue
        projection = rep.capacity_projection(top.cpu_us, CAPACITY_RATES)
        parts += [
            f"## Capacity projection: {topology} (a projection, not a measurement)",
            "",
            f"From the CPU per request measured at {top.users} users: requests/s one core"
            " could serve of each component alone, and cores needed at each rate, assuming"
            " linear scaling and no contention.",
            "",
            rep.capacity_table(projection, CAPACITY_RATES),
            "",
        ]
    if bench.memory:
        parts += ["## Peak memory (VmHWM, MiB)", "", "| deployment | component | MiB |"]
        parts += ["|---|---|---|"]
        for name, components in bench.memory.items():
            parts += [f"| {name} | {c} | {mib:,.0f} |" for c, mib in components.items()]
        parts.append("")
    parts += ["## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    flames = sorted((bench.out / "profiles").glob("*.svg"))
    if flames:
        parts += [
            "## Flame graphs",
            "",
            "py-spy (200 Hz) on every server process during one more shopper run at the"
            " ladder's top, not measured (`--profile`); open them in a browser:",
            "",
            *(f"- [{svg.stem}](profiles/{svg.name})" for svg in flames),
            "",
        ]
    if bench.failures:
        parts += ["## Runs with failures", "", *(f"- {line}" for line in bench.failures), ""]
    text = "\n".join(parts)
    (bench.out / "report.md").write_text(text, encoding="utf-8")
    (bench.out / "steps.json").write_text(
        json.dumps([asdict(step) for step in bench.steps], indent=1), encoding="utf-8"
    )
    summary = [rep.targets_table(targets)]
    for topology in ("monolith", "services"):
        ladder = rep.select(rows, topology, "shopper")
        if ladder:
            summary += [f"\n{topology}:", rep.ladder_table(ladder)]
    if kata_figures:
        summary += ["\nkata steps:", rep.kata_table(kata_figures)]
        summary += ["", rep.kata_cpu_table(kata_figures)]
    return "\n".join(summary)
