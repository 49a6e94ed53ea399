"""``python -m bench``: the shopper benchmark, monolith against services, in one run.

For each topology it starts the servers natively on 127.0.0.1 (known pids, scratch
databases under the results folder, ports away from :8000), seeds the catalog, warms up,
then steps Locust (closed loop, no think time) through a ladder of user counts, repeated.
Servers are pinned to CPU 0 and Locust to CPU 1 when the machine has two or more CPUs.
Every step records Locust's CSVs and the CPU seconds of every server process, by component.
Then come the reference ceilings (``/healthz``; ``GET /products/{id}`` straight to catalog
against through the gateway) and, in the full run, the scaling comparison. With ``--kata``
(or ``--steps 1,2,4``) the same shopper ladder and fixed-rate step also run against the
topology of each step of the kata (``kata.steps``), one after the other. The report
(``report.md``, PNG plots, ``steps.json``) goes to ``bench/results/<timestamp>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench import procs
from bench import report as rep
from kata import steps as kata
from launcher import Launcher, LauncherError, Timeouts, topologies
from launcher.processes import free_port, stop_process, wait_answering
from shop.identity.tokens import write_key_file

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
    step_ladder: tuple[int, ...] | None = None
    """The ladder of each kata step (None: the same as ``ladder``)."""
    step_seconds: int | None = None
    """Length of each kata step's runs (None: ``seconds``)."""

    @property
    def kata_ladder(self) -> tuple[int, ...]:
        return self.step_ladder or self.ladder

    @property
    def kata_seconds(self) -> int:
        return self.step_seconds or self.seconds


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
    step_ladder=(8,),
    step_seconds=6,
)
START_ATTEMPTS = 3
"""Starts of one topology tried when another program takes one of its ports meanwhile."""


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
    database: Path | None = None
    """The SQLite file it serves from (the monolith's), for the reference app to share."""

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


@contextlib.contextmanager
def monolith(out: Path, plan: Plan, *, workers: int = 1) -> Iterator[Deployment]:
    """``python -m monolith serve`` with ``workers`` workers on a free port, seeded in process."""
    scratch = out / "scratch" / f"monolith-w{workers}"
    scratch.mkdir(parents=True, exist_ok=True)
    key_file = scratch / "signing-key.pem"
    key_file.unlink(missing_ok=True)
    write_key_file(key_file)  # 0600: identity refuses a key file others can read
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
        wait_answering(f"{url}/readyz", process, timeout=60, log_file=log_file)
        say(f"monolith: {url} pid {process.pid}, {workers} worker(s)")
        yield Deployment("monolith", url, {"monolith": [process.pid]}, database=scratch / "shop.db")
    finally:
        stop_process(process)


@contextlib.contextmanager
def reference_app(out: Path, database: Path) -> Iterator[Deployment]:
    """``python -m bench.reference`` (bench/reference.py) on ``database``, a free port."""
    port = free_port()
    log_file = out / "scratch" / "reference.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.reference", "--database", str(database)]
    with log_file.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            [*command, "--port", str(port)],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{url}/healthz", process, timeout=60, log_file=log_file)
        say(f"reference app: {url} pid {process.pid}, on {database.name}")
        yield Deployment("reference", url, {"reference": [process.pid]})
    finally:
        stop_process(process)


def entry_url(launcher: Launcher) -> str:
    """Where clients go: the gateway, or the one service of a topology without a gateway."""
    if launcher.gateway_url is not None:
        return launcher.gateway_url
    names = list(launcher.topology.services)
    if len(names) != 1:
        raise RuntimeError(f"{launcher.topology.name}: no gateway and {len(names)} services")
    return launcher.urls[names[0]][0]


def seed_over_http(url: str, plan: Plan, env: Mapping[str, str], log_file: Path) -> None:
    """``python -m loadtests.seed`` against ``url`` (the admin comes from ``env``)."""
    started = time.monotonic()
    command = [sys.executable, "-m", "loadtests.seed", "--base-url", url]
    command += ["--products", str(plan.products)]
    with log_file.open("wb") as log:
        result = subprocess.run(  # noqa: S603 (our interpreter, our module)
            command,
            cwd=REPO,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    if result.returncode:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"seeding {url} failed ({result.returncode}):\n{tail}")
    say(f"seeded {plan.products} products through {url} ({time.monotonic() - started:.1f} s)")


@contextlib.contextmanager
def launched(
    out: Path, plan: Plan, topology_file: Path, label: str, *, replicas: str = ""
) -> Iterator[Deployment]:
    """A topology started by the launcher on free ports, seeded over HTTP through its entry
    (the gateway, or the monolith alone at kata step 0); every process stopped afterwards."""
    scratch = out / "scratch" / label
    scratch.mkdir(parents=True, exist_ok=True)
    key_file = scratch / "signing-key.pem"
    key_file.unlink(missing_ok=True)
    write_key_file(key_file)  # 0600: identity refuses a key file others can read
    env = server_env(scratch, key_file)
    for attempt in range(1, START_ATTEMPTS + 1):
        topology = topologies.resolve(topology_file, replicas=replicas)
        topology = topologies.relocate(topology, offset=topologies.free_port_offset(topology))
        databases = {name: f"sqlite+aiosqlite:///{scratch / name}.db" for name in topology.services}
        launcher = Launcher(
            topology,
            databases=databases,
            run_dir=scratch / "run",
            env=env,
            cwd=REPO,
            timeouts=Timeouts(migrate=120, ready=60, stop=10, seed=600),
            progress=lambda line: say(f"{label}: {line}"),
        )
        try:
            launcher.start_all()
            break
        except LauncherError as exc:
            # The machine is shared: a port found free may be taken before it is bound.
            if "already in use" not in str(exc) or attempt == START_ATTEMPTS:
                raise
            say(f"{label}: a port was taken meanwhile; starting again on other ports")
    try:
        url = entry_url(launcher)
        seed_over_http(url, plan, env, scratch / "seed.log")
        deployment = Deployment(label, url, launcher.pids)
        if "catalog" in launcher.urls:
            deployment.extra_urls["catalog"] = launcher.urls["catalog"][0]
        yield deployment
    finally:
        launcher.stop_all()


@contextlib.contextmanager
def services(out: Path, plan: Plan, *, replicas: str = "") -> Iterator[Deployment]:
    """The services topology behind the gateway, by the launcher, seeded over HTTP."""
    label = "services" + (f"-{replicas.replace('=', '')}" if replicas else "")
    with launched(out, plan, REPO / "topologies" / "services.toml", label, replicas=replicas) as d:
        yield d


def step_label(number: int) -> str:
    """The topology name a kata step's runs carry in the results."""
    return f"step-{number}"


@contextlib.contextmanager
def kata_step(out: Path, plan: Plan, step: kata.Step) -> Iterator[Deployment]:
    """The topology of one kata step (``kata.steps``), started and seeded like the services."""
    with launched(out, plan, REPO / step.topology, step_label(step.number)) as deployment:
        yield deployment


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
    processes: dict[str, int] = field(default_factory=dict)
    """Server processes of each deployment measured."""
    profiling: bool = False
    """Record a flame graph of every server process (``--profile``)."""

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
        log_text = (prefix.parent / f"{prefix.name}.log").read_text(errors="replace")
        failures = max(int(stats["failures"]), rep.failures_in_log(log_text))
        locust_cpu = (children_after.ru_utime + children_after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        step = rep.Step(
            topology=deployment.name,
            scenario=name,
            users=users,
            repeat=repeat,
            requests=int(stats["requests"]),
            failures=failures,
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

    def prepare(self, deployment: Deployment, ladder: Sequence[int] | None = None) -> None:
        self.processes[deployment.name] = sum(len(pids) for pids in deployment.groups.values())
        if self.pinned:
            procs.pin([pid for pids in deployment.pids().values() for pid in pids], SERVER_CPUS)
        say(f"{deployment.name}: warming up ({self.plan.warmup_seconds} s)")
        self.locust(
            deployment,
            scenario="shopper",
            users=max(ladder or self.plan.ladder) // 2 or 1,
            seconds=self.plan.warmup_seconds,
            repeat=0,
            label="warmup",
            record=False,
        )

    def ladder(
        self,
        deployment: Deployment,
        ladder: Sequence[int] | None = None,
        seconds: int | None = None,
    ) -> None:
        for repeat in range(1, self.plan.repeats + 1):
            for users in ladder or self.plan.ladder:
                self.locust(
                    deployment,
                    scenario="shopper",
                    users=users,
                    seconds=seconds or self.plan.seconds,
                    repeat=repeat,
                )

    def reference(self, runs: Sequence[tuple[Deployment, str, str, str]]) -> None:
        """Interleaved reference steps, each repeat: (deployment, label, scenario, host).

        The CPU of each step is read from its own deployment, so the shop and the reference
        app can take turns against the same core in one run.
        """
        for repeat in range(1, self.plan.reference_repeats + 1):
            for deployment, label, scenario, host in runs:
                self.locust(
                    deployment,
                    scenario=scenario,
                    users=self.plan.reference_users,
                    seconds=self.plan.reference_seconds,
                    repeat=repeat,
                    host=host,
                    label=label,
                )

    def profile(self, deployment: Deployment, users: int) -> None:
        """The shopper mix once more, not recorded, with py-spy sampling every server process:
        one flame graph (SVG) per process in ``profiles/``. Sampling costs the servers some
        CPU, so it runs apart from the measured steps."""
        if not self.profiling:
            return
        py_spy = Path(sys.executable).parent / "py-spy"
        folder = self.out / "profiles"
        folder.mkdir(parents=True, exist_ok=True)
        seconds = self.plan.seconds
        samplers = []
        for component, pids in deployment.pids().items():
            for index, pid in enumerate(pids):
                name = f"{deployment.name}-{component}" + (f"-{index}" if index else "")
                command = [str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds)]
                command += ["--rate", "200", "--nonblocking", "--format", "flamegraph"]
                command += ["--output", str(folder / f"{name}.svg")]
                log = (folder / f"{name}.log").open("wb")
                samplers.append(
                    (
                        name,
                        subprocess.Popen(  # noqa: S603 (our virtualenv's py-spy)
                            command, stdout=log, stderr=subprocess.STDOUT
                        ),
                        log,
                    )
                )
        say(f"{deployment.name}: profiling {len(samplers)} process(es) for {seconds} s")
        self.locust(
            deployment,
            scenario="shopper",
            users=users,
            seconds=seconds,
            repeat=0,
            label="profile",
            record=False,
        )
        for name, sampler, log in samplers:
            try:
                sampler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
            log.close()
            svg = folder / f"{name}.svg"
            if sampler.returncode or not svg.exists():
                self.failures.append(f"profile of {name}: py-spy exit {sampler.returncode}")
            else:
                say(f"flame graph {svg.relative_to(self.out)}")

    def fixed_rate(self, deployment: Deployment, rate: float, seconds: int | None = None) -> None:
        """The shopper mix at a fixed total rate (tasks/s) over HALF_LOAD_USERS users."""
        for repeat in range(1, self.plan.reference_repeats + 1):
            self.locust(
                deployment,
                scenario="shopper",
                users=HALF_LOAD_USERS,
                seconds=seconds or self.plan.seconds,
                repeat=repeat,
                label=HALF_LOAD,
                wait=f"rate:{rate / HALF_LOAD_USERS:.4f}",
            )

    def remember_memory(self, deployment: Deployment) -> None:
        self.memory[deployment.name] = deployment.peak_rss_mib()

    def best_rps(self, topology: str) -> float:
        return max(
            (s.rps for s in self.steps if s.topology == topology and s.scenario == "shopper"),
            default=0.0,
        )

    def kata(
        self,
        steps: Sequence[kata.Step],
        half_rate: float | None,
        measured: Mapping[int, str] | None = None,
    ) -> list[KataRun]:
        """Each step's topology in turn: warm-up, the step ladder, the fixed-rate run.

        The fixed rate is ``half_rate`` (half the monolith's best, from the comparison) or,
        without one, half the best throughput of the first step measured here. ``measured``
        maps a step to a deployment already measured in this run with the same ladder and
        rate (step 0 is the monolith, step 6 the services): its runs are reused, not repeated.
        """
        runs = []
        ladder, seconds = self.plan.kata_ladder, self.plan.kata_seconds
        for step in steps:
            label = step_label(step.number)
            source = (measured or {}).get(step.number)
            if source is not None:
                say(f"kata step {step.number}: the {source} runs above measured it already")
                self.steps.extend(
                    dataclasses.replace(run, topology=label)
                    for run in list(self.steps)
                    if run.topology == source and run.scenario in ("shopper", HALF_LOAD)
                )
                self.processes[label] = self.processes[source]
                runs.append(
                    KataRun(step.number, step.title, label, self.processes[label], reused=True)
                )
                continue
            say(f"kata step {step.number}: {step.title} ({step.topology})")
            try:
                with kata_step(self.out, self.plan, step) as deployment:
                    self.prepare(deployment, ladder)
                    self.ladder(deployment, ladder, seconds)
                    if half_rate is None:
                        half_rate = self.best_rps(deployment.name) / 2
                        say(
                            f"kata: the fixed rate is half of step {step.number}'s best,"
                            f" {half_rate:,.0f} req/s"
                        )
                    self.fixed_rate(deployment, half_rate, seconds)
                    self.remember_memory(deployment)
            except (LauncherError, RuntimeError, subprocess.SubprocessError) as exc:
                # One step that cannot start (or run) does not cost the other steps' figures.
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                say(f"kata step {step.number} failed: {exc}")
                self.failures.append(f"kata step {step.number}: {first}")
            runs.append(KataRun(step.number, step.title, label, self.processes.get(label, 0)))
        return runs


@dataclass(frozen=True)
class KataRun:
    """A kata step that ran: what the report needs besides its Locust steps."""

    number: int
    title: str
    topology: str
    processes: int
    reused: bool = False
    """Its runs are those of the comparison's monolith or services, not runs of its own."""


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
            f" {plan.reference_repeats}; Locust FastHttpUser, closed loop, no think time;"
            " argon2 time 1, 1 MiB, 1 lane; uvicorn access logs on (as deployed)"
        ),
    }


def kata_settings(plan: Plan) -> str:
    return (
        f"ladder {list(plan.kata_ladder)} users x {plan.kata_seconds} s x {plan.repeats}"
        f" repeat(s), then the fixed rate ({HALF_LOAD_USERS} users) x {plan.kata_seconds} s x"
        f" {plan.reference_repeats}; warm-up {plan.warmup_seconds} s; {plan.products} products"
    )


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
    kata_options.add_argument("--kata", action="store_true", help="every step, 0 to 6")
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


def parse_users(text: str) -> tuple[int, ...]:
    """``8,16,32`` as a ladder of user counts."""
    try:
        users = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"user counts are whole numbers, comma-separated: {text!r}") from None
    if not users or min(users) < 1:
        raise ValueError(f"user counts must be 1 or more: {text!r}")
    return users


def parse_steps(text: str) -> list[kata.Step]:
    """``1,2,4``, ``2-5`` or ``all`` as kata steps, in order, each once."""
    if text.strip() == "all":
        return list(kata.STEPS)
    numbers: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        first = kata.step(low).number
        last = kata.step(high).number if dash else first
        if last < first:
            raise ValueError(f"a range of steps goes up: {part.strip()!r}")
        numbers.update(range(first, last + 1))
    return [kata.STEPS[number] for number in sorted(numbers)]


def compare(bench: Bench) -> float:
    """The monolith against the services (and, in the full run, scaling); returns the
    fixed rate: half the monolith's best throughput."""
    out, plan = bench.out, bench.plan
    with monolith(out, plan) as mono:
        bench.prepare(mono)
        bench.ladder(mono)
        half_rate = max(s.rps for s in bench.steps if s.scenario == "shopper") / 2
        say(f"monolith: fixed rate at half its best throughput, {half_rate:,.0f} req/s")
        bench.fixed_rate(mono, half_rate)
        assert mono.database is not None
        with reference_app(out, mono.database) as ref:
            if bench.pinned:
                procs.pin(ref.pids()["reference"], SERVER_CPUS)
            # Interleaved: the shop and the bare stack take turns on the same core.
            bench.reference(
                [
                    (mono, "health", "health", mono.url),
                    (ref, "health", "health", ref.url),
                    (mono, "product", "product", mono.url),
                    (ref, "product", "product", ref.url),
                ]
            )
            bench.remember_memory(ref)
        bench.profile(mono, max(plan.ladder))
        bench.remember_memory(mono)

    with services(out, plan) as serv:
        bench.prepare(serv)
        bench.ladder(serv)
        say(f"services: fixed rate at half the monolith's best throughput, {half_rate:,.0f} req/s")
        bench.fixed_rate(serv, half_rate)
        catalog = serv.extra_urls["catalog"]
        bench.reference(
            [
                (serv, "health", "health", serv.url),
                (serv, "product-catalog", "product", catalog),
                (serv, "product-gateway", "product", serv.url),
            ]
        )
        bench.profile(serv, max(plan.ladder))
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
