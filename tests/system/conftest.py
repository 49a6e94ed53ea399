"""System tests: real server processes on loopback, started with a known pid, always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from launcher import Launcher, Timeouts, start_on_free_ports, topologies
from launcher.processes import free_port, stop_process, wait_answering
from shop.identity.tokens import write_key_file
from tests import support

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    pid: int
    key_file: Path
    log_file: Path


class ProcessOutput:
    """The lines a started process prints (stdout piped, text mode), read by a thread so that
    every wait for a line is bounded; ``seen`` holds what was read so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout or ():
            self._lines.put(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.seen)

    def wait_for(self, text: str, timeout: float) -> None:
        """Read lines until one contains ``text``; fail, showing the output, after
        ``timeout`` seconds or when the process ended without printing it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self._lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(
            f"no {text!r} within {timeout} s (exit code {self.process.poll()}); output:\n"
            + self.text
        )

    def drain(self) -> None:
        """After the process ended: the rest of its output into ``seen``."""
        self._reader.join(timeout=10)
        while not self._lines.empty():
            self.seen.append(self._lines.get())


@dataclass(frozen=True)
class LauncherCli:
    """``python -m launcher`` as a developer runs it, from the folder ``cwd`` (its var/ holds
    the run's databases, logs and control socket)."""

    cwd: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A one-shot command (status, stop, down...), bounded in time."""
        return subprocess.run(  # noqa: S603 (our interpreter, our module)
            [sys.executable, "-m", "launcher", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def up(self, *args: str) -> ProcessOutput:
        """``up`` in the foreground, in its own session; stop it with SIGINT or ``down``."""
        process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            [sys.executable, "-m", "launcher", "up", *args],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        return ProcessOutput(process)


def assert_contract_suite_passes(base_url: str, signing_key_file: Path) -> None:
    """Run the whole black-box contract suite against a running deployment, in a subprocess."""
    result = subprocess.run(  # noqa: S603 (our own interpreter running our own suite)
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/contract",
            "-q",
            "-p",
            "no:cacheprovider",
            "--base-url",
            base_url,
            "--admin-email",
            support.ADMIN_EMAIL,
            "--admin-password",
            support.ADMIN_PASSWORD,
            "--signing-key-file",
            str(signing_key_file),
            "--issuer",
            support.ISSUER,
            "--audience",
            support.AUDIENCE,
            "--payment-delay",
            str(support.PAYMENT_DELAY_SECONDS),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in summary, summary
    assert "failed" not in summary, summary


FUZZ_MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "40")
FUZZ_SEED = os.environ.get("FUZZ_SEED", "20261124")
"""The seed is fixed so that a failure reproduces; change ``FUZZ_SEED`` to explore."""


def assert_fuzzing_finds_nothing(base_url: str, server_logs: list[Path]) -> None:
    """Schemathesis against a running deployment's /openapi.json, as the admin, with every
    check (settings in ``schemathesis.toml``); then no server log may hold a traceback."""
    token = httpx2.post(
        f"{base_url}/auth/token",
        data={"username": support.ADMIN_EMAIL, "password": support.ADMIN_PASSWORD},
        timeout=10,
        trust_env=False,
    ).json()["access_token"]
    result = subprocess.run(  # noqa: S603 (the fuzzer installed in our own virtualenv)
        [
            str(Path(sys.executable).parent / "st"),
            "run",
            f"{base_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            FUZZ_MAX_EXAMPLES,
            "--seed",
            FUZZ_SEED,
            "--request-timeout",
            "15",
            # One worker: schemathesis' workers are threads, and CPython 3.11 before 3.11.8
            # can raise "SystemError: AST constructor recursion depth mismatch" when two
            # threads parse source at once (python/cpython#106905; hypothesis parses a
            # lambda's source to name a filtered strategy). It failed a CI run here.
            "--workers",
            "1",
            "--no-color",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    report = result.stdout[-8000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "generated" in result.stdout, report
    assert server_logs, "no server log to check"
    for log in server_logs:
        text = log.read_text()
        assert "Traceback" not in text, f"{log.name}:\n{text[-6000:]}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated scratch database (sync fixture: the server is another process anyway)."""
    url = asyncio.run(support.create_scratch_database(tmp_path_factory.mktemp("system-db")))
    try:
        asyncio.run(support.migrate(url))
        yield url
    finally:
        asyncio.run(support.drop_scratch_database(url))


@pytest.fixture(scope="session")
def live_monolith(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """``python -m monolith serve`` on a free loopback port, with test settings."""
    tmp = tmp_path_factory.mktemp("live-monolith")
    key_file = tmp / "signing-key.pem"
    assert write_key_file(key_file)  # 0600: identity refuses a key file others can read
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "IDENTITY_SIGNING_KEY_FILE": str(key_file),
        "IDENTITY_ISSUER": support.ISSUER,
        "IDENTITY_AUDIENCE": support.AUDIENCE,
        "IDENTITY_ARGON2_TIME_COST": "1",
        "IDENTITY_ARGON2_MEMORY_KIB": "64",
        "IDENTITY_ARGON2_PARALLELISM": "1",
        "IDENTITY_BOOTSTRAP_ADMIN_EMAIL": support.ADMIN_EMAIL,
        "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD": support.ADMIN_PASSWORD,
        "PAYMENTS_PROCESSOR_DELAY_SECONDS": str(support.PAYMENT_DELAY_SECONDS),
        "ORDERS_FINGERPRINT_KEY": support.FINGERPRINT_KEY,
        # Every client of these tests comes from 127.0.0.1: the contract suite's and the
        # fuzzer's failed sign-ins would add up to the per-address limit (30) and turn the
        # next ones into 429s. tests/security shows the limit itself.
        "IDENTITY_THROTTLE_ADDRESS_FAILURES": "100000",
    }
    env.pop("IDENTITY_SIGNING_KEY_PEM", None)
    log_file = tmp / "server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "monolith", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(
            f"{base_url}/readyz", process, timeout=START_TIMEOUT_SECONDS, log_file=log_file
        )
        yield LiveServer(base_url=base_url, pid=process.pid, key_file=key_file, log_file=log_file)
    finally:
        stop_process(process)


# --------------------------------------------------------------------------- the launcher
# Used by test_services*.py and test_faults*.py: whole topologies started by launcher/, on
# ports moved away from a developer's :8000, each service on its own scratch database.

GATEWAY_CONNECT_TIMEOUT_SECONDS = 1.0
GATEWAY_READ_TIMEOUT_SECONDS = 10.0
GATEWAY_BUDGET_SECONDS = GATEWAY_CONNECT_TIMEOUT_SECONDS + GATEWAY_READ_TIMEOUT_SECONDS + 1.0
"""The longest the gateway may take to answer anything, slack included: its timeouts."""


def launcher_env(key_file: Path, **extra: str) -> dict[str, str]:
    """This environment plus test settings: cheap hashing, a known key and admin."""
    env = {
        **os.environ,
        "IDENTITY_SIGNING_KEY_FILE": str(key_file),
        "IDENTITY_ISSUER": support.ISSUER,
        "IDENTITY_AUDIENCE": support.AUDIENCE,
        "IDENTITY_ARGON2_TIME_COST": "1",
        "IDENTITY_ARGON2_MEMORY_KIB": "64",
        "IDENTITY_ARGON2_PARALLELISM": "1",
        "IDENTITY_BOOTSTRAP_ADMIN_EMAIL": support.ADMIN_EMAIL,
        "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD": support.ADMIN_PASSWORD,
        "PAYMENTS_PROCESSOR_DELAY_SECONDS": str(support.PAYMENT_DELAY_SECONDS),
        "ORDERS_FINGERPRINT_KEY": support.FINGERPRINT_KEY,
        # Every client of these tests comes from 127.0.0.1: the contract suite's and the
        # fuzzer's failed sign-ins would add up to the per-address limit (30) and turn the
        # next ones into 429s. tests/security shows the limit itself.
        "IDENTITY_THROTTLE_ADDRESS_FAILURES": "100000",
        "GATEWAY_ISSUER": support.ISSUER,
        "GATEWAY_AUDIENCE": support.AUDIENCE,
        "GATEWAY_CONNECT_TIMEOUT_SECONDS": str(GATEWAY_CONNECT_TIMEOUT_SECONDS),
        "GATEWAY_READ_TIMEOUT_SECONDS": str(GATEWAY_READ_TIMEOUT_SECONDS),
        **extra,
    }
    for name in ("IDENTITY_SIGNING_KEY_PEM", "SHOP_TOPOLOGY", "SHOP_REPLICAS", "DATABASE_URL"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Ed25519 signing key for the launched topologies of this session."""
    key_file = tmp_path_factory.mktemp("launcher-key") / "signing-key.pem"
    assert write_key_file(key_file)  # 0600: identity refuses a key file others can read
    return key_file


def require_services() -> None:
    """Fail (never skip) when the services deployables are missing."""
    assert (REPO / "services" / "__main__.py").exists(), (
        "services/__main__.py is missing: the services topology cannot be launched"
    )


@contextlib.contextmanager
def launched(
    topology_file: str,
    tmp: Path,
    env: dict[str, str],
    *,
    replicas: str = "",
    timeouts: Timeouts = Timeouts(migrate=60.0, ready=60.0, stop=10.0),
) -> Iterator[Launcher]:
    """A topology started by the launcher on free ports, each service on a scratch database
    (SQLite, or PostgreSQL with TEST_DATABASE_URL); every process stopped and every
    database dropped afterwards."""
    topology = topologies.resolve(REPO / topology_file, replicas=replicas)
    urls: dict[str, str] = {}
    try:
        for name in topology.services:
            urls[name] = asyncio.run(support.create_scratch_database(tmp))
        launcher = start_on_free_ports(
            topology,
            lambda moved: Launcher(
                moved,
                databases=urls,
                run_dir=tmp / "run",
                env=env,
                cwd=REPO,
                timeouts=timeouts,
                progress=print,
            ),
        )
        try:
            yield launcher
        finally:
            launcher.stop_all()
    finally:
        for url in urls.values():
            asyncio.run(support.drop_scratch_database(url))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours are reaped once stopped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
