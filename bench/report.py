"""The benchmark's arithmetic and its report: no processes here, so tests can check it.

A :class:`Step` is one Locust run against one target. Steps repeated at the same user count
are summarised by their median (:func:`summarise`); CPU is turned into microseconds per
request per component; ratios and a capacity projection are derived from those rows.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The performance targets (ratios taken in one run).
GATEWAY_TAX_TARGET = 0.85
THROUGHPUT_RATIO_TARGET = 0.85
"""With the read models of kata step 7 the services answer product views and carts without
asking another service (0.75 before events)."""
P50_RATIO_TARGET = 2.0
"""Services' p50 at half the monolith's best rate, at most this many times the monolith's
(issue 12; 1.5 before events)."""
CPU_RATIO_TARGET = 1.4
"""Services' CPU per shopper request at most this many times the monolith's."""
EVENT_LAG_P99_TARGET_MS = 250.0
"""Between the services, an event's change to its read model's update, p99 at half load."""
REFERENCE_PRODUCT_TARGET = 0.8
"""The monolith's product view: at least this share of the reference app's throughput."""
REFERENCE_MIX_CPU_TARGET = 2.0
"""The monolith's shopper mix: CPU per request at most this many times the reference app's
product view (the mix also searches, writes carts and checks out)."""
LAYERS = "layers"
"""A target on the shop's own layers (the monolith against the reference app)."""
SPLIT = "split"
"""A target on the cost of the split (the services against the monolith)."""
SATURATION_SHARE = 0.95
"""A level "saturates" when it reaches this share of the best throughput of the ladder."""


@dataclass(frozen=True)
class Step:
    """One Locust run: ``topology`` (monolith, services, ...), ``scenario`` (shopper,
    health, product-direct, ...), the user count, and what was measured."""

    topology: str
    scenario: str
    users: int
    repeat: int
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float
    cpu_seconds: Mapping[str, float] = field(default_factory=dict)
    """Server CPU (user + system) spent during the run, by component."""
    locust_cpu_seconds: float = 0.0


@dataclass(frozen=True)
class Row:
    """The median of the repeats of one (topology, scenario, users)."""

    topology: str
    scenario: str
    users: int
    runs: int
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float
    cpu_us: Mapping[str, float]
    """Server CPU microseconds per request, by component (median over the repeats)."""
    locust_cpu_us: float

    @property
    def failure_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def cpu_us_total(self) -> float:
        return sum(self.cpu_us.values())


def cpu_us_per_request(cpu_seconds: float, requests: int) -> float:
    """CPU seconds spent over a run, as microseconds per request (0 without requests)."""
    if requests <= 0:
        return 0.0
    return cpu_seconds * 1_000_000 / requests


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0."""
    return numerator / denominator if denominator else math.nan


def read_locust_stats(path: Path) -> dict[str, float]:
    """The ``Aggregated`` row of a Locust ``*_stats.csv``: requests, failures, rps, p50/95/99
    (milliseconds)."""
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            if record.get("Name") == "Aggregated":
                return {
                    "requests": float(record["Request Count"]),
                    "failures": float(record["Failure Count"]),
                    "rps": float(record["Requests/s"]),
                    "p50": _number(record["50%"]),
                    "p95": _number(record["95%"]),
                    "p99": _number(record["99%"]),
                }
    raise ValueError(f"{path}: no Aggregated row")


_LOG_AGGREGATED = re.compile(r"^\s+Aggregated\s+(\d+)\s+(\d+)\(", re.M)


def failures_in_log(text: str) -> int:
    """Failed requests in the last stats table of a Locust log (0 if it has none).

    Locust writes its CSVs before the users stop; a request still running then (say a 504
    after the gateway's 10 s timeout) is counted in the log's final table but not in the
    CSV, so the failure count of a run is the larger of the two."""
    rows = _LOG_AGGREGATED.findall(text)
    return int(rows[-1][1]) if rows else 0


def read_task_names(path: Path) -> set[str]:
    """The request names (``/products/[id]``...) a Locust ``*_stats.csv`` holds."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {r["Name"] for r in csv.DictReader(handle) if r.get("Name") != "Aggregated"}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def summarise(steps: Iterable[Step]) -> list[Row]:
    """One row per (topology, scenario, users): medians of rate, latency and CPU/request,
    sums of requests and failures. Order: as first seen, users ascending."""
    groups: dict[tuple[str, str, int], list[Step]] = {}
    for step in steps:
        groups.setdefault((step.topology, step.scenario, step.users), []).append(step)
    rows = []
    for (topology, scenario, users), runs in groups.items():
        components = sorted({name for run in runs for name in run.cpu_seconds})
        cpu_us = {
            name: statistics.median(
                cpu_us_per_request(run.cpu_seconds.get(name, 0.0), run.requests) for run in runs
            )
            for name in components
        }
        rows.append(
            Row(
                topology=topology,
                scenario=scenario,
                users=users,
                runs=len(runs),
                requests=sum(run.requests for run in runs),
                failures=sum(run.failures for run in runs),
                rps=statistics.median(run.rps for run in runs),
                p50=statistics.median(run.p50 for run in runs),
                p95=statistics.median(run.p95 for run in runs),
                p99=statistics.median(run.p99 for run in runs),
                cpu_us=cpu_us,
                locust_cpu_us=statistics.median(
                    cpu_us_per_request(run.locust_cpu_seconds, run.requests) for run in runs
                ),
            )
        )
    order = {key[:2]: index for index, key in enumerate(groups)}
    return sorted(rows, key=lambda row: (order[(row.topology, row.scenario)], row.users))


def select(rows: Iterable[Row], topology: str, scenario: str) -> list[Row]:
    return [row for row in rows if row.topology == topology and row.scenario == scenario]


def saturation(rows: Sequence[Row]) -> Row | None:
    """The first (lowest user count) row reaching SATURATION_SHARE of the best throughput."""
    if not rows:
        return None
    best = max(row.rps for row in rows)
    return next(
        row for row in sorted(rows, key=lambda r: r.users) if row.rps >= best * SATURATION_SHARE
    )


def nearest(rows: Sequence[Row], users: float) -> Row | None:
    """The row whose user count is nearest ``users`` (the lower one on a tie)."""
    if not rows:
        return None
    return min(rows, key=lambda row: (abs(row.users - users), row.users))


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    goal: str
    met: bool
    note: str
    threshold: float = 0.0
    about: str = ""
    """What a miss would be about (:data:`LAYERS`, :data:`SPLIT`), for :func:`why_missed`."""

    @classmethod
    def at_least(
        cls, name: str, value: float, threshold: float, note: str, *, about: str = ""
    ) -> Target:
        return cls(name, value, f">= {threshold}", value >= threshold, note, threshold, about)

    @classmethod
    def at_most(
        cls, name: str, value: float, threshold: float, note: str, *, about: str = ""
    ) -> Target:
        return cls(name, value, f"<= {threshold}", value <= threshold, note, threshold, about)

    @property
    def miss(self) -> str:
        """How far from the goal, as a share of it ("" when met)."""
        if self.met:
            return ""
        if not self.threshold:
            return f"{self.value:g} over"
        share = abs(self.value - self.threshold) / self.threshold
        # A miss under 1% must not read "0% off": show it with the digits it needs.
        return f"{share:.0%} off" if share >= 0.01 else f"{share:.2%} off"

    @property
    def shown(self) -> str:
        """The measured value with two decimals, or three where two would round a miss
        onto the threshold (0.598 against 0.6 shows as 0.598, not 0.60)."""
        two = _fmt(self.value, 2)
        if not self.met and self.threshold and two == _fmt(self.threshold, 2):
            return _fmt(self.value, 3)
        return two


def evaluate_targets(
    monolith: Sequence[Row],
    services: Sequence[Row],
    *,
    direct: Row | None,
    via_gateway: Row | None,
    failures: int,
    half_load: tuple[Row | None, Row | None] = (None, None),
    product: tuple[Row | None, Row | None] = (None, None),
) -> list[Target]:
    """The targets, from the shopper ladders, the fixed-rate pair at half the monolith's
    saturation throughput (``half_load``: monolith row, services row; without it the ladder
    level nearest half the monolith's saturation users), the gateway-tax pair and the
    product-view pair (``product``: the monolith's row, the reference app's row)."""
    targets = []
    shop_view, reference = product
    if shop_view is not None and reference is not None:
        targets.append(
            Target.at_least(
                f"monolith / reference app: GET /products/[id] throughput"
                f" ({shop_view.users} users)",
                ratio(shop_view.rps, reference.rps),
                REFERENCE_PRODUCT_TARGET,
                f"{shop_view.rps:,.0f} vs {reference.rps:,.0f} req/s;"
                f" {shop_view.cpu_us_total:,.0f} vs {reference.cpu_us_total:,.0f} CPU us/req",
                about=LAYERS,
            )
        )
        mono_top = saturation(monolith)
        if mono_top is not None:
            targets.append(
                Target.at_most(
                    "monolith shopper mix CPU / reference app's product view CPU (per request)",
                    ratio(mono_top.cpu_us_total, reference.cpu_us_total),
                    REFERENCE_MIX_CPU_TARGET,
                    f"{mono_top.cpu_us_total:,.0f} vs {reference.cpu_us_total:,.0f} us"
                    f" ({mono_top.users} users)",
                    about=LAYERS,
                )
            )
    if direct is not None and via_gateway is not None:
        targets.append(
            Target.at_least(
                f"gateway tax: GET /products/[id] through the gateway / straight to catalog"
                f" ({via_gateway.users} users)",
                ratio(via_gateway.rps, direct.rps),
                GATEWAY_TAX_TARGET,
                f"{via_gateway.rps:,.0f} vs {direct.rps:,.0f} req/s",
            )
        )
    mono_sat, serv_sat = saturation(monolith), saturation(services)
    if mono_sat is not None and serv_sat is not None:
        best_mono = max(row.rps for row in monolith)
        best_serv = max(row.rps for row in services)
        targets.append(
            Target.at_least(
                "services / monolith throughput at saturation (shopper mix)",
                ratio(best_serv, best_mono),
                THROUGHPUT_RATIO_TARGET,
                f"best {best_serv:,.0f} vs {best_mono:,.0f} req/s;"
                f" monolith saturates at {mono_sat.users} users",
                about=SPLIT,
            )
        )
        targets.append(
            Target.at_most(
                "services / monolith CPU per shopper request at saturation",
                ratio(serv_sat.cpu_us_total, mono_sat.cpu_us_total),
                CPU_RATIO_TARGET,
                f"{serv_sat.cpu_us_total:,.0f} vs {mono_sat.cpu_us_total:,.0f} us"
                f" ({serv_sat.users} / {mono_sat.users} users)",
                about=SPLIT,
            )
        )
        half_mono, half_serv = half_load
        where = f"a fixed {half_mono.rps:,.0f} req/s" if half_mono else ""
        if half_mono is None or half_serv is None:
            half_mono = nearest(monolith, mono_sat.users / 2)
            half_serv = nearest(services, mono_sat.users / 2)
            where = f"{half_mono.users if half_mono else '?'} users"
        if half_mono is not None and half_serv is not None:
            targets.append(
                Target.at_most(
                    f"services / monolith p50 at half the monolith's saturation load ({where})",
                    ratio(half_serv.p50, half_mono.p50),
                    P50_RATIO_TARGET,
                    f"{half_serv.p50:g} vs {half_mono.p50:g} ms",
                    about=SPLIT,
                )
            )
    targets.append(
        Target("failed requests (every run)", failures, "= 0", failures == 0, f"{failures}")
    )
    return targets


@dataclass(frozen=True)
class Capacity:
    component: str
    cpu_us: float
    per_core_rps: float
    cores_needed: dict[int, float]


def capacity_projection(cpu_us: Mapping[str, float], rates: Sequence[int]) -> list[Capacity]:
    """A projection, not a measurement: from CPU microseconds per request of each
    component, the requests/s one core could serve of it alone, and the cores each
    component needs at each target rate (linear scaling, no contention, no I/O waits)."""
    projection = []
    for component, us in cpu_us.items():
        per_core = 1_000_000 / us if us > 0 else math.inf
        needed = {rate: rate * us / 1_000_000 for rate in rates}
        projection.append(Capacity(component, us, per_core, needed))
    return projection


@dataclass(frozen=True)
class KataStep:
    """One kata step as the benchmark measured it: its shopper ladder and fixed-rate row."""

    number: int
    title: str
    topology: str
    """The name its steps carry in the results (``step-2``)."""
    processes: int
    best: Row | None
    """The ladder's saturation row (:func:`saturation`); its CPU is the step's CPU/request."""
    best_rps: float
    """The ladder's best throughput."""
    fixed: Row | None
    """The fixed-rate row (the same rate for every step)."""

    @property
    def cpu_us(self) -> float:
        return self.best.cpu_us_total if self.best is not None else math.nan

    @property
    def p50(self) -> float:
        return self.fixed.p50 if self.fixed is not None else math.nan

    @property
    def failures(self) -> int:
        return sum(row.failures for row in (self.best, self.fixed) if row is not None)


def kata_steps(
    rows: Sequence[Row],
    steps: Sequence[tuple[int, str, str, int]],
    *,
    ladder: str = "shopper",
    fixed: str = "half-load",
) -> list[KataStep]:
    """Per step (``(number, title, topology, processes)``, in order): the best throughput of
    its ``ladder`` rows, the saturation row, and its ``fixed``-rate row."""
    found = []
    for number, title, topology, processes in steps:
        ladder_rows = select(rows, topology, ladder)
        found.append(
            KataStep(
                number=number,
                title=title,
                topology=topology,
                processes=processes,
                best=saturation(ladder_rows),
                best_rps=max((row.rps for row in ladder_rows), default=math.nan),
                fixed=next(iter(select(rows, topology, fixed)), None),
            )
        )
    return found


def kata_table(steps: Sequence[KataStep]) -> str:
    """One line per step, each figure with its ratio to the step before (``x prev``)."""
    lines = [
        "| step | what | processes | req/s at saturation | x prev | p50 ms at the fixed rate"
        " | x prev | CPU us/req at saturation | x prev | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    previous: KataStep | None = None
    for step in steps:
        users = f" ({step.best.users} users)" if step.best is not None else ""
        fixed = f" ({_fmt(step.fixed.rps)} req/s)" if step.fixed is not None else ""

        cells = [
            str(step.number),
            step.title,
            str(step.processes),
            _fmt(step.best_rps) + users,
            _change(step.best_rps, previous.best_rps if previous else None),
            _fmt(step.p50) + fixed,
            _change(step.p50, previous.p50 if previous else None),
            _fmt(step.cpu_us),
            _change(step.cpu_us, previous.cpu_us if previous else None),
            str(step.failures),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        previous = step
    return "\n".join(lines)


def _change(value: float, before: float | None) -> str:
    return "" if before is None else _fmt(ratio(value, before), 2)


def kata_cpu_table(steps: Sequence[KataStep]) -> str:
    """CPU microseconds per request by component at each step's saturation row."""
    components = sorted(
        {name for step in steps if step.best is not None for name in step.best.cpu_us},
        # The monolith and the gateway first, then the services by name.
        key=lambda name: ({"monolith": 0, "gateway": 1}.get(name, 2), name),
    )
    head = ["step", *components, "all"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for step in steps:
        cpu = step.best.cpu_us if step.best is not None else {}
        cells = [str(step.number)]
        cells += [_fmt(cpu[name]) if name in cpu else "" for name in components]
        cells.append(_fmt(step.cpu_us))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------- rendering


def _fmt(value: float, digits: int = 0) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def ladder_table(rows: Sequence[Row]) -> str:
    """Markdown table of one topology's ladder."""
    components = sorted({name for row in rows for name in row.cpu_us})
    head = [
        "users",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "failed",
        "server CPU us/req",
        *(f"{name} us/req" for name in components),
        "locust CPU us/req",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            str(row.users),
            _fmt(row.rps),
            _fmt(row.p50),
            _fmt(row.p95),
            _fmt(row.p99),
            f"{row.failure_rate:.2%}",
            _fmt(row.cpu_us_total),
            *(_fmt(row.cpu_us.get(name, 0.0)) for name in components),
            _fmt(row.locust_cpu_us),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(monolith: Sequence[Row], services: Sequence[Row]) -> str:
    """services / monolith at each user count both ladders have."""
    by_users = {row.users: row for row in monolith}
    lines = [
        "| users | throughput | p50 | p95 | p99 | CPU us/req |",
        "|---|---|---|---|---|---|",
    ]
    for row in services:
        base = by_users.get(row.users)
        if base is None:
            continue
        cells = [
            ratio(row.rps, base.rps),
            ratio(row.p50, base.p50),
            ratio(row.p95, base.p95),
            ratio(row.p99, base.p99),
            ratio(row.cpu_us_total, base.cpu_us_total),
        ]
        lines.append(f"| {row.users} | " + " | ".join(_fmt(c, 2) for c in cells) + " |")
    return "\n".join(lines)


def reference_table(rows: Sequence[Row]) -> str:
    lines = [
        "| target | users | req/s | p50 ms | p99 ms | failed | server CPU us/req |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.topology} {row.scenario} | {row.users} | {_fmt(row.rps)} | {_fmt(row.p50)}"
            f" | {_fmt(row.p99)} | {row.failure_rate:.2%} | {_fmt(row.cpu_us_total)} |"
        )
    return "\n".join(lines)


def targets_table(targets: Sequence[Target]) -> str:
    lines = ["| target | measured | goal | met | detail |", "|---|---|---|---|---|"]
    for target in targets:
        met = "yes" if target.met else f"**no** ({target.miss})"
        lines.append(f"| {target.name} | {target.shown} | {target.goal} | {met} | {target.note} |")
    return "\n".join(lines)


def why_missed(
    targets: Sequence[Target],
    monolith: Sequence[Row],
    services: Sequence[Row],
    product: tuple[Row | None, Row | None] = (None, None),
) -> list[str]:
    """For each missed target, where the difference sits in this run's own figures (CPU per
    request by process), and what the profiles said it is (docs/benchmarks.md)."""
    missed = {target.about for target in targets if not target.met}
    notes: list[str] = []
    shop_view, reference = product
    if shop_view is not None and reference is not None and LAYERS in missed:
        extra = shop_view.cpu_us_total - reference.cpu_us_total
        notes.append(
            f"- **The shop's layers** cost {_fmt(extra)} CPU us more per product view than the"
            f" reference app ({_fmt(shop_view.cpu_us_total)} vs {_fmt(reference.cpu_us_total)}):"
            " in the profiles, the ORM session (an AsyncSession transaction costs about twice a"
            " Core connection), FastAPI's dependency solving and the request session's exit, and"
            " uvicorn's access log (about 80 us), which the reference app does not write."
        )
    mono, serv = saturation(monolith), saturation(services)
    if mono is not None and serv is not None and SPLIT in missed:
        parts = sorted(serv.cpu_us.items(), key=lambda item: -item[1])
        by_process = ", ".join(f"{name} {_fmt(us)}" for name, us in parts if us >= 1)
        notes.append(
            f"- **The split** costs {_fmt(serv.cpu_us_total - mono.cpu_us_total)} CPU us more"
            f" per shopper request than the monolith ({_fmt(serv.cpu_us_total)} vs"
            f" {_fmt(mono.cpu_us_total)}; by process: {by_process}). Every server shares one"
            " core, so throughput follows CPU per request. Every request crosses the gateway"
            " (a second HTTP parse and answer); product views and cart pages answer from read"
            " models, but a checkout still makes six calls (each a request in another process"
            " plus the caller's client) and its changes travel as five events, each published,"
            " routed by the broker and applied by a consumer; and every process pays for its"
            " own event loop and server stack, and the core for switching between them."
        )
    return notes


def capacity_table(projection: Sequence[Capacity], rates: Sequence[int]) -> str:
    head = ["component", "CPU us/req", "req/s per core", *(f"cores at {r:,} req/s" for r in rates)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cap in projection:
        cells = [cap.component, _fmt(cap.cpu_us), _fmt(cap.per_core_rps)]
        cells += [_fmt(cap.cores_needed[rate], 2) for rate in rates]
        lines.append("| " + " | ".join(cells) + " |")
    if len(projection) > 1:
        total = sum(cap.cpu_us for cap in projection)
        cells = ["**all**", _fmt(total), _fmt(1_000_000 / total if total else math.inf)]
        cells += [_fmt(sum(cap.cores_needed[rate] for cap in projection), 2) for rate in rates]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], out: Path, topologies: Sequence[str]) -> list[Path]:
    """Three PNGs, both topologies on the same axes: throughput, latency, CPU/request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for topology in topologies:
        ladder = select(rows, topology, "shopper")
        ax.plot([r.users for r in ladder], [r.rps for r in ladder], marker="o", label=topology)
    ax.set(xlabel="users (closed loop)", ylabel="requests/s", title="Shopper mix: throughput")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, out / "throughput.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"p50": "-", "p95": "--", "p99": ":"}
    for index, topology in enumerate(topologies):
        ladder = select(rows, topology, "shopper")
        for name, style in styles.items():
            ax.plot(
                [r.users for r in ladder],
                [getattr(r, name) for r in ladder],
                linestyle=style,
                marker="o",
                color=f"C{index}",
                label=f"{topology} {name}",
            )
    ax.set(xlabel="users (closed loop)", ylabel="ms", title="Shopper mix: latency percentiles")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    written.append(_save(fig, out / "latency.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    bars = []
    for topology in topologies:
        top = saturation(select(rows, topology, "shopper"))
        if top is not None:
            bars.append((f"{topology}\n({top.users} users)", top))
    components = sorted({name for _, row in bars for name in row.cpu_us})
    for index, component in enumerate(components):
        bottoms = [sum(row.cpu_us.get(c, 0.0) for c in components[:index]) for _, row in bars]
        values = [row.cpu_us.get(component, 0.0) for _, row in bars]
        ax.bar([label for label, _ in bars], values, bottom=bottoms, label=component)
    ax.set(ylabel="server CPU us/request", title="CPU per request by component, at saturation")
    ax.legend(fontsize="small")
    written.append(_save(fig, out / "cpu_per_request.png"))
    return written


def plot_kata(steps: Sequence[KataStep], out: Path) -> Path:
    """One PNG: throughput at saturation and CPU per request (by component) per kata step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = [str(step.number) for step in steps]
    left.bar(labels, [step.best_rps for step in steps], color="C0")
    left.set(xlabel="kata step", ylabel="requests/s", title="Shopper mix: throughput at saturation")
    left.grid(alpha=0.3, axis="y")
    components = sorted(
        {name for step in steps if step.best is not None for name in step.best.cpu_us}
    )
    bottoms = [0.0] * len(steps)
    for component in components:
        values = [
            step.best.cpu_us.get(component, 0.0) if step.best is not None else 0.0 for step in steps
        ]
        right.bar(labels, values, bottom=bottoms, label=component)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    right.set(xlabel="kata step", ylabel="server CPU us/request", title="CPU per request")
    right.legend(fontsize="small")
    return _save(fig, out / "kata_steps.png")


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path
