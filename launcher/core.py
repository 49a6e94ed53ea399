"""The launcher: every service of a topology and the gateway as processes on loopback.

Each process is started by the launcher with a known pid, writes its output to
``<run_dir>/logs/<name>.log`` and is stopped by that pid only (SIGTERM, then SIGKILL after a
timeout). Every wait is bounded; a failure names the process and shows the tail of its log.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import httpx2

from launcher import processes, topologies
from launcher.processes import LOG_TAIL_LINES, log_tail
from launcher.processes import indent as _indent
from shop.kernel.topology import HOST, ServiceSpec, Topology

GATEWAY = "gateway"
DEFAULT_GATEWAY_APP = "composition.gateway:create_app"
INTERNAL_TOKEN_ENV = "SHOP_INTERNAL_TOKEN"  # noqa: S105 (the name of a variable)
EDGE_TOKEN_ENV = "SHOP_EDGE_TOKEN"  # noqa: S105 (the name of a variable)
SEED_CONTEXTS = ("identity", "catalog", "inventory")
"""What the demo seed talks to: a login, categories and products, stock."""

Progress = Callable[[str], None]


class LauncherError(processes.ProcessError):
    """Something the launcher started failed or did not answer in time; the message says
    which process, and shows the end of its log."""


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds, in seconds, of every wait of the launcher."""

    migrate: float = 120.0
    ready: float = 60.0
    stop: float = 10.0
    seed: float = 900.0


@dataclass(frozen=True)
class ProcessInfo:
    """What the launcher knows about one of its processes."""

    name: str
    service: str
    port: int
    url: str
    pid: int | None
    state: str
    """``running``, ``stopped`` (by the launcher), ``exited N`` (on its own) or ``new``."""
    log_file: Path


@dataclass
class _Managed:
    name: str
    service: str
    port: int
    log_file: Path
    worker: bool = False
    """The service's consumers' worker (``catalog-worker``), not a replica that serves it."""
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False
    reported: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def info(self) -> ProcessInfo:
        if self.process is None:
            state, pid = "new", None
        else:
            pid = self.process.pid
            code = self.process.poll()
            if code is None:
                state = "running"
            elif self.stopped:
                state = "stopped"
            else:
                state = f"exited {code}"
        return ProcessInfo(self.name, self.service, self.port, self.url, pid, state, self.log_file)


@dataclass
class _Plan:
    """The processes of a topology, in start order (services first, the gateway last)."""

    services: dict[str, list[_Managed]] = field(default_factory=dict)
    gateway: _Managed | None = None

    def all(self) -> list[_Managed]:
        every = [proc for replicas in self.services.values() for proc in replicas]
        return every + ([self.gateway] if self.gateway else [])


class Launcher:
    """Start, stop and restart the processes of one topology on 127.0.0.1.

    ``topology`` is used as given (ports included: see :func:`launcher.topologies.relocate`
    to move it); it is written to ``run_dir/topology.toml`` and every process reads it
    through ``SHOP_TOPOLOGY``. ``databases`` maps each service to its own database URL.
    ``env`` is the environment passed through to every process (default: this process's);
    the launcher adds ``DATABASE_URL``, ``SHOP_TOPOLOGY``, ``SHOP_REPLICAS``, a random
    ``SHOP_INTERNAL_TOKEN`` shared by the services of this run, and a random
    ``SHOP_EDGE_TOKEN`` shared by them and the gateway (which vouches for callers' addresses).

    Names accepted by :meth:`start`, :meth:`stop` and :meth:`restart`: a service name (all
    its replicas, and its consumers' worker if it has one), one replica (``catalog-1``), a
    worker (``catalog-worker``), or ``gateway``.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        databases: Mapping[str, str],
        run_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        python: str = sys.executable,
        gateway_app: str = DEFAULT_GATEWAY_APP,
        timeouts: Timeouts = Timeouts(),
        progress: Progress = print,
    ) -> None:
        if GATEWAY in topology.services:
            raise LauncherError(f"{topology.name}: a service may not be named {GATEWAY!r}")
        missing = sorted(set(topology.services) - set(databases))
        if missing:
            raise LauncherError(f"{topology.name}: no database given for {', '.join(missing)}")
        self.topology = topology
        self.databases = dict(databases)
        self.run_dir = run_dir.resolve()
        self.log_dir = self.run_dir / "logs"
        self.cwd = (cwd or Path.cwd()).resolve()
        self.python = python
        self.gateway_app = gateway_app
        self.timeouts = timeouts
        self._progress = progress
        self._base_env = dict(os.environ if env is None else env)
        self.internal_token = secrets.token_urlsafe(32)
        self.edge_token = secrets.token_urlsafe(32)
        self.topology_file = self.run_dir / "topology.toml"
        self._lock = threading.RLock()
        self._started_pids: list[int] = []
        self._plan = _Plan()
        for name, spec in topology.services.items():
            self._plan.services[name] = [
                _Managed(f"{name}-{index}", name, port, self.log_dir / f"{name}-{index}.log")
                for index, port in enumerate(spec.ports)
            ]
            if spec.worker_port is not None:
                worker = f"{name}-worker"
                self._plan.services[name].append(
                    _Managed(worker, name, spec.worker_port, self.log_dir / f"{worker}.log", True)
                )
        if topology.gateway_port is not None:
            self._plan.gateway = _Managed(
                GATEWAY, GATEWAY, topology.gateway_port, self.log_dir / f"{GATEWAY}.log"
            )

    # -- what is running ---------------------------------------------------------------

    @property
    def gateway_url(self) -> str | None:
        """The base URL every client uses, or None for a topology without a gateway."""
        return self._plan.gateway.url if self._plan.gateway else None

    @property
    def entry_url(self) -> str | None:
        """Where clients go: the gateway, or, in a topology without one (the kata's step 0),
        the first replica of the one service that serves identity, catalog and inventory
        (what the seed needs). None when there is neither."""
        if self._plan.gateway:
            return self._plan.gateway.url
        serving = [
            name
            for name, spec in self.topology.services.items()
            if set(SEED_CONTEXTS) <= set(spec.contexts)
        ]
        if len(serving) != 1:
            return None
        return self._plan.services[serving[0]][0].url

    @property
    def urls(self) -> dict[str, list[str]]:
        """Base URLs by process group: ``gateway`` first, then each service's replicas (its
        worker serves no requests, only its health checks)."""
        urls: dict[str, list[str]] = {}
        if self._plan.gateway:
            urls[GATEWAY] = [self._plan.gateway.url]
        for name, replicas in self._plan.services.items():
            urls[name] = [proc.url for proc in replicas if not proc.worker]
        return urls

    @property
    def pids(self) -> dict[str, list[int]]:
        """Pids of the processes running now, by group (``gateway`` and each service, its
        worker in its group)."""
        with self._lock:
            pids: dict[str, list[int]] = {}
            for proc in self._plan.all():
                if proc.process is not None and proc.running:
                    pids.setdefault(proc.service, []).append(proc.process.pid)
            return pids

    @property
    def started_pids(self) -> list[int]:
        """Every pid this launcher ever started (migrations and stopped ones included)."""
        with self._lock:
            return list(self._started_pids)

    def processes(self) -> list[ProcessInfo]:
        """Every process of the topology, services first, with its state."""
        with self._lock:
            return [proc.info() for proc in self._plan.all()]

    def exited(self) -> list[ProcessInfo]:
        """Processes that died on their own since the last call (each reported once)."""
        with self._lock:
            found = []
            for proc in self._plan.all():
                if proc.process is None or proc.stopped or proc.reported or proc.running:
                    continue
                proc.reported = True
                found.append(proc.info())
            return found

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        """The end of one process's log (``catalog-0``, ``gateway``)."""
        for proc in self._plan.all():
            if proc.name == name:
                return log_tail(proc.log_file, lines)
        raise LauncherError(f"no process named {name!r}; known: {self._names()}")

    # -- lifecycle -------------------------------------------------------------------

    def start_all(self, *, migrate: bool = True) -> None:
        """Migrate every database, start every service, wait for it, then the gateway.

        On any failure everything started so far is stopped before the error propagates.
        """
        with self._lock:
            self._check_ports_free(self._plan.all())
            topologies.write(self.topology, self.topology_file)
            self._progress(
                f"topology {self.topology.name}: {len(self.topology.services)} services,"
                f" {len(self._plan.all())} processes; run topology {self.topology_file}"
            )
            try:
                if migrate:
                    self.migrate()
                services = [proc for replicas in self._plan.services.values() for proc in replicas]
                self._start(services, truncate_logs=True)
                if self._plan.gateway:
                    self._start([self._plan.gateway], truncate_logs=True)
            except BaseException:
                self.stop_all()
                raise

    def migrate(self, services: Iterable[str] | None = None) -> None:
        """Apply the migrations of each service's contexts to its own database (in parallel)."""
        names = list(self.topology.services if services is None else services)
        started = time.monotonic()
        running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        try:
            for name in names:
                spec = self.topology.services[name]
                log_file = self.log_dir / f"{name}-migrate.log"
                process = self._spawn(
                    self._migrate_command(spec), self._service_env(name), log_file, truncate=True
                )
                running.append((name, process, log_file))
            deadline = started + self.timeouts.migrate
            for name, process, log_file in running:
                try:
                    code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise LauncherError(
                        f"migrating {name} (pid {process.pid}) took over"
                        f" {self.timeouts.migrate:g} s; last lines of {log_file}:\n"
                        + _indent(log_tail(log_file))
                    ) from None
                if code != 0:
                    raise LauncherError(
                        f"migrating {name} (pid {process.pid}) failed with exit code {code};"
                        f" last lines of {log_file}:\n" + _indent(log_tail(log_file))
                    )
        finally:
            for _, process, _ in running:
                self._reap(process)
        took = time.monotonic() - started
        self._progress(f"migrated {', '.join(names)} ({took:.1f} s)")

    def start(self, name: str) -> None:
        """Start the named processes that are not running, and wait until they are ready."""
        with self._lock:
            procs = [proc for proc in self._select(name) if not proc.running]
            if not procs:
                self._progress(f"{name}: already running")
                return
            for proc in procs:
                if proc.process is not None:
                    self._reap(proc.process)
            self._check_ports_free(procs)
            self._start(procs)

    def stop(self, name: str) -> None:
        """Stop the named processes (SIGTERM, then SIGKILL after the stop timeout)."""
        with self._lock:
            self._stop(self._select(name))

    def restart(self, name: str) -> None:
        """Stop the named processes, start them again and wait until they are ready."""
        with self._lock:
            procs = self._select(name)
            self._stop(procs)
            self._check_ports_free(procs)
            self._start(procs)

    def stop_all(self) -> None:
        """Stop every process: the gateway first, then every service."""
        with self._lock:
            if self._plan.gateway:
                self._stop([self._plan.gateway])
            self._stop([proc for replicas in self._plan.services.values() for proc in replicas])

    def seed(self, arguments: Sequence[str] = ("--if-empty",)) -> None:
        """Run ``python -m loadtests.seed`` against :attr:`entry_url` (the gateway, or the
        service that serves identity, catalog and inventory), printing its progress."""
        entry = self.entry_url
        if entry is None:
            raise LauncherError(
                f"{self.topology.name} has no gateway, and no single service serves"
                f" {', '.join(SEED_CONTEXTS)}: there is nothing to seed the demo catalog"
                " through (pass --no-seed)"
            )
        command = [self.python, "-m", "loadtests.seed", "--base-url", entry]
        command += list(arguments)
        process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            command,
            cwd=self.cwd,
            env={**self._base_env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: list[str] = []

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip())
                self._progress(line.rstrip())

        reader = threading.Thread(target=pump, name="seed-output", daemon=True)
        reader.start()
        try:
            code = process.wait(timeout=self.timeouts.seed)
        except subprocess.TimeoutExpired:
            raise LauncherError(
                f"seeding (pid {process.pid}) took over {self.timeouts.seed:g} s:\n"
                + _indent("\n".join(lines[-LOG_TAIL_LINES:]))
            ) from None
        finally:
            self._reap(process)
            reader.join(timeout=5)
            if process.stdout is not None:
                process.stdout.close()
        if code != 0:
            admin = ("IDENTITY_BOOTSTRAP_ADMIN_EMAIL", "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD")
            hint = (
                ""
                if all(self._base_env.get(name) for name in admin)
                else f"\nseeding signs in as the admin, and {' / '.join(admin)} are not set:"
                " set them (make sets local defaults) or pass --no-seed"
            )
            raise LauncherError(
                f"seeding (pid {process.pid}) failed with exit code {code}:\n"
                + _indent("\n".join(lines[-LOG_TAIL_LINES:]))
                + hint
            )

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()

    # -- internals -------------------------------------------------------------------

    def _names(self) -> str:
        return ", ".join([*self._plan.services, *(p.name for p in self._plan.all())])

    def _select(self, name: str) -> list[_Managed]:
        if name == GATEWAY and self._plan.gateway:
            return [self._plan.gateway]
        if name in self._plan.services:
            return list(self._plan.services[name])
        for proc in self._plan.all():
            if proc.name == name:
                return [proc]
        raise LauncherError(f"no service or process named {name!r}; known: {self._names()}")

    def _check_ports_free(self, procs: Iterable[_Managed]) -> None:
        for proc in procs:
            if not processes.port_is_free(proc.port):
                raise LauncherError(
                    f"port {proc.port} for {proc.name} is already in use on {HOST}: another"
                    " deployment (or a process left from an earlier run) listens there;"
                    f" find it with `ss -ltnp 'sport = :{proc.port}'`, or move this one with"
                    " --port / --port-offset"
                )

    def _common_env(self) -> dict[str, str]:
        return {
            **self._base_env,
            "PYTHONUNBUFFERED": "1",
            "SHOP_TOPOLOGY": str(self.topology_file),
            "SHOP_REPLICAS": topologies.replicas_text(self.topology),
            EDGE_TOKEN_ENV: self.edge_token,
        }

    def _service_env(self, service: str) -> dict[str, str]:
        env = self._common_env()
        env["DATABASE_URL"] = self.databases[service]
        env[INTERNAL_TOKEN_ENV] = self.internal_token
        return env

    def _gateway_env(self) -> dict[str, str]:
        env = self._common_env()
        # The edge has no database, and never holds the services' shared secret.
        env.pop("DATABASE_URL", None)
        env.pop(INTERNAL_TOKEN_ENV, None)
        return env

    def _is_monolith(self, spec: ServiceSpec) -> bool:
        return spec.app.split(".", 1)[0] == "monolith"

    def _migrate_command(self, spec: ServiceSpec) -> list[str]:
        if self._is_monolith(spec):
            return [self.python, "-m", "monolith", "migrate"]
        return [self.python, "-m", "services", "migrate", spec.name]

    def _serve_command(self, proc: _Managed) -> list[str]:
        address = ["--host", HOST, "--port", str(proc.port)]
        if proc.service == GATEWAY:
            if self.gateway_app == DEFAULT_GATEWAY_APP:
                # The gateway's own entry point: no access log, no trusting X-Forwarded-*.
                return [self.python, "-m", "gateway", "serve", *address]
            return [self.python, "-m", "uvicorn", "--factory", self.gateway_app, *address]
        spec = self.topology.services[proc.service]
        if self._is_monolith(spec):
            return [self.python, "-m", "monolith", "serve", *address]
        if proc.worker:
            return [self.python, "-m", "services", "worker", spec.name, *address]
        return [self.python, "-m", "services", "serve", spec.name, *address]

    def _spawn(
        self, command: list[str], env: dict[str, str], log_file: Path, *, truncate: bool
    ) -> subprocess.Popen[bytes]:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        with log_file.open("wb" if truncate else "ab") as log:
            log.write(f"--- {stamp} launcher runs: {' '.join(command)}\n".encode())
            log.flush()
            # A session of its own: Ctrl-C in the terminal reaches the launcher only, which
            # then stops each process in order, by pid.
            process = subprocess.Popen(  # noqa: S603 (our interpreter, our modules)
                command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._started_pids.append(process.pid)
        return process

    def _start(self, procs: list[_Managed], *, truncate_logs: bool = False) -> None:
        """Spawn the processes, then wait for every /readyz (one shared deadline).

        A restarted process appends to its log, so the story of a fault stays in one file.
        """
        for proc in procs:
            env = (
                self._gateway_env() if proc.service == GATEWAY else self._service_env(proc.service)
            )
            command = self._serve_command(proc)
            proc.process = self._spawn(command, env, proc.log_file, truncate=truncate_logs)
            proc.stopped = False
            proc.reported = False
            self._progress(f"start {proc.name:<14} {proc.url:<24} pid {proc.process.pid}")
        started = time.monotonic()
        deadline = started + self.timeouts.ready
        with httpx2.Client(trust_env=False) as client:
            for proc in procs:
                self._wait_ready(client, proc, deadline)
                took = time.monotonic() - started
                self._progress(f"ready {proc.name:<14} {proc.url}/readyz ({took:.1f} s)")

    def _wait_ready(self, client: httpx2.Client, proc: _Managed, deadline: float) -> None:
        assert proc.process is not None
        url = f"{proc.url}/readyz"
        try:
            processes.wait_answering(url, proc.process, deadline=deadline, client=client)
        except processes.NotReady as exc:
            if exc.exit_code is not None:
                what = (
                    f"{proc.name} (pid {exc.pid}, port {proc.port}) exited with code"
                    f" {exc.exit_code} before it was ready"
                )
            else:
                what = (
                    f"{proc.name} (pid {exc.pid}) did not answer 200 at {url} within"
                    f" {self.timeouts.ready:g} s (last: {exc.last})"
                )
            raise LauncherError(
                f"{what}; last lines of {proc.log_file}:\n" + _indent(log_tail(proc.log_file))
            ) from None

    def _stop(self, procs: list[_Managed]) -> None:
        """SIGTERM each running process by pid, wait, SIGKILL whatever outlives the timeout."""
        names: dict[int, str] = {}
        for proc in procs:
            if proc.process is None:
                continue
            proc.stopped = True
            if proc.process.poll() is None:
                names[proc.process.pid] = proc.name
                self._progress(f"stop  {proc.name:<14} pid {proc.process.pid}")

        def killing(process: subprocess.Popen[bytes]) -> None:
            self._progress(
                f"{names[process.pid]} (pid {process.pid}) ignored SIGTERM for"
                f" {self.timeouts.stop:g} s; killing it"
            )

        live = [p.process for p in procs if p.process is not None and p.process.pid in names]
        try:
            processes.stop(live, self.timeouts.stop, on_kill=killing)
        except processes.ProcessError as exc:  # pragma: no cover (a kernel-level hang)
            raise LauncherError(str(exc)) from exc

    def _reap(self, process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
        """Kill a process of ours if it still runs, and collect its exit status."""
        try:
            processes.reap(process)
        except processes.ProcessError as exc:  # pragma: no cover (a kernel-level hang)
            raise LauncherError(str(exc)) from exc


START_ATTEMPTS = 3
"""Starts of one topology tried when another program takes one of its ports meanwhile."""


def start_on_free_ports(
    topology: Topology,
    make: Callable[[Topology], Launcher],
    *,
    attempts: int = START_ATTEMPTS,
    retrying: Callable[[], None] | None = None,
) -> Launcher:
    """``make(topology moved to free ports).start_all()``, again on other free ports when a
    port found free was taken before its process bound it (the machine is shared); the
    started launcher. ``retrying`` is called before each new attempt."""
    for attempt in range(1, attempts + 1):
        launcher = make(topologies.relocate(topology, offset=topologies.free_port_offset(topology)))
        try:
            launcher.start_all()
            return launcher
        except LauncherError as exc:
            launcher.stop_all()
            if "already in use" not in str(exc) or attempt == attempts:
                raise
            if retrying is not None:
                retrying()
    raise AssertionError("unreachable: the last attempt returns or raises")
