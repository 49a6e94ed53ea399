"""``python -m bench``: the shopper benchmark, monolith against services, in one run.

For each topology it starts the servers natively on 127.0.0.1 (known pids, scratch
databases under the results folder, ports away from :8000), seeds the catalog, warms up,
then steps Locust (closed loop, no think time) through a ladder of user counts, repeated.
Servers are pinned to CPU 0 and Locust to CPU 1 when the machine has two or more CPUs.
Every step records Locust's CSVs and the CPU seconds of every server process, by component.
Then come the reference ceilings (``/healthz``; ``GET /products/{id}`` straight to catalog
against through the gateway) and, in the full run, the scaling comparison. The report
(``report.md``, PNG plots, ``steps.json``) goes to ``bench/results/<timestamp>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import httpx2

from bench import procs
from bench import report as rep
from launcher import Launcher, Timeouts, topologies
from shop.identity.tokens import generate_private_key_pem

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
SERVER_CPUS = {0}
LOCUST_CPUS = {1}
CAPACITY_RATES = (500, 1_000, 5_000)
HALF_LOAD = "half-load"
HALF_LOAD_USERS = 32
ADMIN_EMAIL = "admin@shopkata.local"
ADMIN_PASSWORD = "shopkata-admin"  # noqa: S105 (the local development default)


@dataclass(frozen=True)
class Plan:
    """How much to run: the ladder, step length, repeats and the reference steps."""

    ladder: tuple[int, ...]
    seconds: int
    repeats: int
    warmup_seconds: int
    products: int
    reference_users: int = 64
    reference_seconds: int = 10
    reference_repeats: int = 2
    scaling: bool = True
    hot_replicas: str = "catalog=2"


FULL = Plan(
    ladder=(1, 2, 4, 8, 16, 32, 64), seconds=30, repeats=2, warmup_seconds=15, products=1000
)
QUICK = Plan(
    ladder=(2, 8, 32),
    seconds=8,
    repeats=1,
    warmup_seconds=3,
    products=200,
    reference_seconds=5,
    reference_repeats=1,
    scaling=False,
)


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def server_env(scratch: Path, key_file: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "IDENTITY_SIGNING_KEY_FILE": str(key_file),
        "IDENTITY_ARGON2_TIME_COST": "1",
        "IDENTITY_ARGON2_MEMORY_KIB": "1024",
        "IDENTITY_ARGON2_PARALLELISM": "1",
        "IDENTITY_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
        "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("IDENTITY_SIGNING_KEY_PEM", "SHOP_TOPOLOGY", "SHOP_REPLICAS", "DATABASE_URL"):
        env.pop(name, None)
    env["BENCH_SCRATCH"] = str(scratch)
    return env


@dataclass
class Deployment:
    """A running topology: its public URL, its processes by component, how to stop it."""

    name: str
    url: str
    groups: Mapping[str, list[int]]
    extra_urls: dict[str, str] = field(default_factory=dict)

    def pids(self) -> dict[str, list[int]]:
        return {name: procs.with_children(pids) for name, pids in self.groups.items()}

    def cpu(self) -> dict[str, float]:
        return {
            name: sum(procs.cpu_seconds(pid) for pid in pids) for name, pids in self.pids().items()
        }

    def peak_rss_mib(self) -> dict[str, float]:
        return {
            name: sum(procs.peak_rss_kib(pid) for pid in pids) / 1024
            for name, pids in self.pids().items()
        }


def wait_ready(url: str, process: subprocess.Popen[bytes], log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited {process.returncode}; see {log_file}")
        with contextlib.suppress(httpx2.TransportError):
            if httpx2.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout:g} s; see {log_file}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM our own process, SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def monolith(out: Path, plan: Plan, *, workers: int = 1) -> Iterator[Deployment]:
    """``python -m monolith serve`` with ``workers`` workers on a free port, seeded in process."""
    scratch = out / "scratch" / f"monolith-w{workers}"
    scratch.mkdir(parents=True, exist_ok=True)
    key_file = scratch / "signing-key.pem"
    key_file.write_text(generate_private_key_pem())
    env = server_env(scratch, key_file)
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{scratch / 'shop.db'}"
    python = sys.executable
    started = time.monotonic()
    for command in (["migrate"], ["seed", "--products", str(plan.products)]):
        subprocess.run(  # noqa: S603 (our interpreter, our module)
            [python, "-m", "monolith", *command],
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
    say(f"monolith: migrated, seeded {plan.products} products ({time.monotonic() - started:.1f} s)")
    port = free_port()
    log_file = scratch / "server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [python, "-m", "monolith", "serve", "--port", str(port), "--workers", str(workers)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_file, 60)
        say(f"monolith: {url} pid {process.pid}, {workers} worker(s)")
        yield Deployment("monolith", url, {"monolith": [process.pid]})
    finally:
        stop_process(process)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def services(out: Path, plan: Plan, *, replicas: str = "") -> Iterator[Deployment]:
    """The services topology behind the gateway, by the launcher, seeded over HTTP."""
    label = "services" + (f"-{replicas.replace('=', '')}" if replicas else "")
    scratch = out / "scratch" / label
    scratch.mkdir(parents=True, exist_ok=True)
    key_file = scratch / "signing-key.pem"
    key_file.write_text(generate_private_key_pem())
    topology = topologies.resolve(REPO / "topologies" / "services.toml", replicas=replicas)
    topology = topologies.relocate(topology, offset=topologies.free_port_offset(topology))
    databases = {name: f"sqlite+aiosqlite:///{scratch / name}.db" for name in topology.services}
    launcher = Launcher(
        topology,
        databases=databases,
        run_dir=scratch / "run",
        env=server_env(scratch, key_file),
        cwd=REPO,
        timeouts=Timeouts(migrate=120, ready=60, stop=10, seed=600),
        progress=lambda line: say(f"services: {line}"),
    )
    try:
        launcher.start_all()
        launcher.seed(["--products", str(plan.products)])
        assert launcher.gateway_url is not None
        deployment = Deployment(label, launcher.gateway_url, launcher.pids)
        deployment.extra_urls["catalog"] = launcher.urls["catalog"][0]
        yield deployment
    finally:
        launcher.stop_all()


def locust_command(host: str, users: int, seconds: int, prefix: Path, *, pinned: bool) -> list[str]:
    locust = str(Path(sys.executable).parent / "locust")
    command = [
        locust,
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--only-summary",
        "--exit-code-on-error",
        "1",
        "--stop-timeout",
        "5",
    ]
    taskset = shutil.which("taskset")
    if pinned and taskset:
        command = [taskset, "-c", ",".join(map(str, sorted(LOCUST_CPUS))), *command]
    return command


@dataclass
class Bench:
    out: Path
    plan: Plan
    pinned: bool
    steps: list[rep.Step] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def locust(
        self,
        deployment: Deployment,
        *,
        scenario: str,
        users: int,
        seconds: int,
        repeat: int,
        host: str | None = None,
        label: str | None = None,
        record: bool = True,
        wait: str = "0",
    ) -> rep.Step | None:
        """One Locust run; the CPU of every server process is read before and after."""
        name = label or scenario
        prefix = self.out / "locust" / f"{deployment.name}-{name}-u{users}-r{repeat}"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LOADTEST_SCENARIO": scenario,
            "LOADTEST_WAIT": wait,
            "PYTHONWARNINGS": "ignore",
        }
        command = locust_command(host or deployment.url, users, seconds, prefix, pinned=self.pinned)
        before = deployment.cpu()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with (prefix.parent / f"{prefix.name}.log").open("wb") as log:
            result = subprocess.run(  # noqa: S603 (our virtualenv's locust)
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=seconds + 60,
                check=False,
            )
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = deployment.cpu()
        if not record:
            return None
        stats = rep.read_locust_stats(prefix.parent / f"{prefix.name}_stats.csv")
        locust_cpu = (children_after.ru_utime + children_after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        step = rep.Step(
            topology=deployment.name,
            scenario=name,
            users=users,
            repeat=repeat,
            requests=int(stats["requests"]),
            failures=int(stats["failures"]),
            rps=stats["rps"],
            p50=stats["p50"],
            p95=stats["p95"],
            p99=stats["p99"],
            cpu_seconds={key: max(0.0, after[key] - before.get(key, 0.0)) for key in after},
            locust_cpu_seconds=locust_cpu,
        )
        self.steps.append(step)
        cpu_us = rep.cpu_us_per_request(sum(step.cpu_seconds.values()), step.requests)
        say(
            f"{deployment.name:<10} {name:<15} {users:>4} users: {step.rps:8,.0f} req/s"
            f"  p50 {step.p50:g} p95 {step.p95:g} p99 {step.p99:g} ms"
            f"  failed {step.failures}  server {cpu_us:,.0f} us/req"
        )
        if step.failures or result.returncode:
            self.failures.append(f"{prefix.name}: {step.failures} failed, exit {result.returncode}")
        return step

    def prepare(self, deployment: Deployment) -> None:
        if self.pinned:
            procs.pin([pid for pids in deployment.pids().values() for pid in pids], SERVER_CPUS)
        say(f"{deployment.name}: warming up ({self.plan.warmup_seconds} s)")
        self.locust(
            deployment,
            scenario="shopper",
            users=max(self.plan.ladder) // 2 or 1,
            seconds=self.plan.warmup_seconds,
            repeat=0,
            label="warmup",
            record=False,
        )

    def ladder(self, deployment: Deployment) -> None:
        for repeat in range(1, self.plan.repeats + 1):
            for users in self.plan.ladder:
                self.locust(
                    deployment,
                    scenario="shopper",
                    users=users,
                    seconds=self.plan.seconds,
                    repeat=repeat,
                )

    def reference(self, deployment: Deployment, pairs: Sequence[tuple[str, str, str]]) -> None:
        """Interleaved reference steps: (label, scenario, host) each repeat."""
        for repeat in range(1, self.plan.reference_repeats + 1):
            for label, scenario, host in pairs:
                self.locust(
                    deployment,
                    scenario=scenario,
                    users=self.plan.reference_users,
                    seconds=self.plan.reference_seconds,
                    repeat=repeat,
                    host=host,
                    label=label,
                )

    def fixed_rate(self, deployment: Deployment, rate: float) -> None:
        """The shopper mix at a fixed total rate (tasks/s) over HALF_LOAD_USERS users."""
        for repeat in range(1, self.plan.reference_repeats + 1):
            self.locust(
                deployment,
                scenario="shopper",
                users=HALF_LOAD_USERS,
                seconds=self.plan.seconds,
                repeat=repeat,
                label=HALF_LOAD,
                wait=f"rate:{rate / HALF_LOAD_USERS:.4f}",
            )

    def remember_memory(self, deployment: Deployment) -> None:
        self.memory[deployment.name] = deployment.peak_rss_mib()


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
        "database": "SQLite (aiosqlite), one file per service, scratch under the results folder",
        "settings": (
            f"ladder {list(plan.ladder)} users x {plan.seconds} s x {plan.repeats} repeat(s),"
            f" warm-up {plan.warmup_seconds} s, {plan.products} products x 100,000 units,"
            f" reference steps {plan.reference_users} users x {plan.reference_seconds} s x"
            f" {plan.reference_repeats}; Locust FastHttpUser, closed loop, no think time;"
            " argon2 time 1, 1 MiB, 1 lane; uvicorn access logs on (as deployed)"
        ),
    }


def write_report(bench: Bench, info: Mapping[str, str], started: float, load: str) -> str:
    rows = rep.summarise(bench.steps)
    mono = rep.select(rows, "monolith", "shopper")
    serv = rep.select(rows, "services", "shopper")
    direct = next(iter(rep.select(rows, "services", "product-catalog")), None)
    via = next(iter(rep.select(rows, "services", "product-gateway")), None)
    failures = sum(row.failures for row in rows)
    half = (
        next(iter(rep.select(rows, "monolith", HALF_LOAD)), None),
        next(iter(rep.select(rows, "services", HALF_LOAD)), None),
    )
    targets = rep.evaluate_targets(
        mono, serv, direct=direct, via_gateway=via, failures=failures, half_load=half
    )
    plots = rep.plot(rows, bench.out, ["monolith", "services"])
    reference = [row for row in rows if row.scenario not in ("shopper",)]
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
    ]
    for topology in ("monolith", "services"):
        ladder = rep.select(rows, topology, "shopper")
        if ladder:
            parts += [f"## {topology}: shopper mix", "", rep.ladder_table(ladder), ""]
    if mono and serv:
        parts += ["## services / monolith", "", rep.ratio_table(mono, serv), ""]
    if reference:
        parts += [
            "## Reference ceilings and scaling",
            "",
            "`health`: `GET /healthz` of the same server stack (the monolith; for services the"
            " gateway's own). `product-catalog` / `product-gateway`: anonymous `GET"
            " /products/{id}` straight to the catalog service / through the gateway (the"
            " gateway tax). `scaling`: the shopper mix on the monolith with N workers against"
            " the services with the hot service replicated, equal process count.",
            "",
            rep.reference_table(reference),
            "",
        ]
    for topology in ("monolith", "services"):
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
    return "\n".join(summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short ladder (< 3 min)")
    parser.add_argument("--users", help="ladder, comma-separated (e.g. 8,16,32)")
    parser.add_argument("--seconds", type=int, help="length of each ladder step")
    parser.add_argument("--repeats", type=int, help="repeats of the ladder")
    parser.add_argument("--products", type=int, help="products to seed")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling comparison")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<ts>)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides: dict[str, object] = {}
    if args.users:
        overrides["ladder"] = tuple(int(u) for u in args.users.split(","))
    for name in ("seconds", "repeats", "products"):
        if getattr(args, name):
            overrides[name] = getattr(args, name)
    if args.no_scaling:
        overrides["scaling"] = False
    if overrides:
        plan = Plan(**{**asdict(plan), **overrides})
    out = args.out or REPO / "bench" / "results" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    info = machine(plan, pinned)
    started = time.monotonic()
    load = procs.load_average()
    say(f"results in {out}; {info['cpu']}; pinning: {info['pinning']}")
    bench = Bench(out, plan, pinned)

    with monolith(out, plan) as mono:
        bench.prepare(mono)
        bench.ladder(mono)
        half_rate = max(s.rps for s in bench.steps if s.scenario == "shopper") / 2
        say(f"monolith: fixed rate at half its best throughput, {half_rate:,.0f} req/s")
        bench.fixed_rate(mono, half_rate)
        bench.reference(mono, [("health", "health", mono.url), ("product", "product", mono.url)])
        bench.remember_memory(mono)

    with services(out, plan) as serv:
        bench.prepare(serv)
        bench.ladder(serv)
        say(f"services: fixed rate at half the monolith's best throughput, {half_rate:,.0f} req/s")
        bench.fixed_rate(serv, half_rate)
        catalog = serv.extra_urls["catalog"]
        bench.reference(
            serv,
            [
                ("health", "health", serv.url),
                ("product-catalog", "product", catalog),
                ("product-gateway", "product", serv.url),
            ],
        )
        bench.remember_memory(serv)

    if plan.scaling:
        replicas = plan.hot_replicas
        with services(out, plan, replicas=replicas) as scaled:
            count = sum(len(pids) for pids in scaled.groups.values())
            bench.prepare(scaled)
            bench.reference(scaled, [(f"scaling-{count}proc", "shopper", scaled.url)])
            bench.remember_memory(scaled)
        with monolith(out, plan, workers=count) as workers:
            workers.name = f"monolith-w{count}"
            bench.prepare(workers)
            bench.reference(workers, [(f"scaling-{count}proc", "shopper", workers.url)])
            bench.remember_memory(workers)

    summary = write_report(bench, info, started, load)
    say(f"done in {time.monotonic() - started:.0f} s; report {out / 'report.md'}")
    print(summary, flush=True)
    if bench.failures:
        say("runs with failed requests: " + "; ".join(bench.failures))
        return 1
    return 0
