"""The deployments the benchmark measures, each started natively on 127.0.0.1 on free ports,
on scratch SQLite databases under the results folder, and always stopped: the monolith
(``python -m monolith serve``), the reference app, and any topology through the launcher
(the services, each kata step), seeded over HTTP. Also the benchmark's progress lines."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.plans import Plan
from composition.app import forget_broker_names
from composition.contexts import declared
from composition.settings import DeployableSettings
from kata import steps as kata
from launcher import Launcher, Timeouts, start_on_free_ports, topologies
from launcher.processes import free_port, stop_process, wait_answering
from shop.identity.tokens import write_key_file
from shop.kernel.broker import RabbitBus
from shop.kernel.topology import Topology

REPO = Path(__file__).resolve().parents[1]
ADMIN_EMAIL = "admin@shopkata.local"
ADMIN_PASSWORD = "shopkata-admin"  # noqa: S105 (the local development default)


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
    # Its own names on a shared broker: never another run's queues, nor a developer's.
    env["SHOP_BUS_PREFIX"] = "bench-" + hashlib.sha256(str(scratch).encode()).hexdigest()[:16]
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
    consumers: dict[str, str] = field(default_factory=dict)
    """Each event-consuming context's database URL, where its inbox tells the events' lag."""
    names: Mapping[int, str] = field(default_factory=dict)
    """The launcher's name of each process it started, by pid (``catalog-worker``)."""

    def pids(self) -> dict[str, list[int]]:
        return {name: procs.with_children(pids) for name, pids in self.groups.items()}

    def cpu(self) -> dict[str, float]:
        return {
            name: sum(procs.cpu_seconds(pid) for pid in pids) for name, pids in self.pids().items()
        }

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds of each server process (its children included), by the launcher's
        name for it (``catalog-worker``), or its component's where it has none."""
        return {
            self.names.get(pid, name): sum(procs.cpu_seconds(p) for p in procs.with_children([pid]))
            for name, pids in self.groups.items()
            for pid in pids
        }

    def peak_rss_mib(self) -> dict[str, float]:
        return {
            name: sum(procs.peak_rss_kib(pid) for pid in pids) / 1024
            for name, pids in self.pids().items()
        }


def _names(launcher: Launcher) -> dict[int, str]:
    return {info.pid: info.name for info in launcher.processes() if info.pid is not None}


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
        shop_db = f"sqlite+aiosqlite:///{scratch / 'shop.db'}"
        yield Deployment(
            "monolith",
            url,
            {"monolith": [process.pid]},
            database=scratch / "shop.db",
            consumers=dict.fromkeys(CONSUMERS, shop_db),
        )
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

    def make(topology: Topology) -> Launcher:
        return Launcher(
            topology,
            databases={
                name: f"sqlite+aiosqlite:///{scratch / name}.db" for name in topology.services
            },
            run_dir=scratch / "run",
            env=env,
            cwd=REPO,
            timeouts=Timeouts(migrate=120, ready=60, stop=10, seed=600),
            progress=lambda line: say(f"{label}: {line}"),
        )

    launcher = start_on_free_ports(
        topologies.resolve(topology_file, replicas=replicas),
        make,
        retrying=lambda: say(f"{label}: a port was taken meanwhile; starting again on other ports"),
    )
    try:
        url = entry_url(launcher)
        seed_over_http(url, plan, env, scratch / "seed.log")
        deployment = Deployment(label, url, launcher.pids, names=_names(launcher))
        for spec in launcher.topology.services.values():
            for context in set(spec.contexts) & set(CONSUMERS):
                deployment.consumers[context] = launcher.databases[spec.name]
        if "catalog" in launcher.urls:
            deployment.extra_urls["catalog"] = launcher.urls["catalog"][0]
        yield deployment
    finally:
        launcher.stop_all()
        if launcher.topology.bus == "rabbitmq":
            forget_broker(env)


def forget_broker(env: Mapping[str, str]) -> None:
    """Delete the run's exchanges and queues (its own prefix) from the shared broker."""
    url = env.get("SHOP_BROKER_URL") or DeployableSettings().broker_url.get_secret_value()
    bus = RabbitBus(url, prefix=env["SHOP_BUS_PREFIX"])
    try:
        asyncio.run(forget_broker_names(bus))
    except Exception as exc:  # the results matter more than a tidy broker
        say(f"could not delete the run's names on the broker ({exc})")


@contextlib.contextmanager
def services(out: Path, plan: Plan, *, replicas: str = "") -> Iterator[Deployment]:
    """The services topology behind the gateway, by the launcher, seeded over HTTP."""
    label = "services" + (f"-{replicas.replace('=', '')}" if replicas else "")
    with launched(out, plan, REPO / "topologies" / "services.toml", label, replicas=replicas) as d:
        yield d


CONSUMERS = tuple(name for name, context in declared().items() if context.subscriptions)
"""The contexts that apply integration events (their inboxes give the events' lag)."""


def step_label(number: int) -> str:
    """The topology name a kata step's runs carry in the results."""
    return f"step-{number}"


@contextlib.contextmanager
def kata_step(out: Path, plan: Plan, step: kata.Step) -> Iterator[Deployment]:
    """The topology of one kata step (``kata.steps``), started and seeded like the services."""
    with launched(out, plan, REPO / step.topology, step_label(step.number)) as deployment:
        yield deployment
