"""System tests: real server processes on loopback, started with a known pid, always stopped."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from shop.identity.tokens import generate_private_key_pem
from tests import support

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    pid: int
    key_file: Path
    log_file: Path


def wait_ready(base_url: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_file.read_text()}")
        try:
            if httpx2.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready in {START_TIMEOUT_SECONDS} s:\n{log_file.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop exactly the process we started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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
    key_pem = generate_private_key_pem()
    key_file = tmp / "signing-key.pem"
    key_file.write_text(key_pem)
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
        wait_ready(base_url, process, log_file)
        yield LiveServer(base_url=base_url, pid=process.pid, key_file=key_file, log_file=log_file)
    finally:
        stop(process)
