"""Real server processes for the findings only sockets can show (tests/conftest.py lists the
files that use them as live-process files).

Every process binds 127.0.0.1 on a free port, is started with a known pid and stopped by it
(launcher.processes.stop_process), and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher.processes import free_port, stop_process, wait_answering
from tests.gateway.support import write_topology
from tests.system.conftest import REPO

__all__ = ["Live", "free_port", "gateway", "process", "raw_request", "status_of", "upstream"]

START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Live:
    """One running server process."""

    name: str
    port: int
    pid: int
    log_file: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        """The process's resident memory now (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


@contextmanager
def process(
    name: str, command: list[str], port: int, folder: Path, env: Mapping[str, str] | None = None
) -> Iterator[Live]:
    """Run ``command`` (which listens on ``port``) until the block ends, then stop it."""
    log_file = folder / f"{name}.log"
    with log_file.open("wb") as log:
        child = subprocess.Popen(  # noqa: S603 (our own interpreter and modules)
            command,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_answering(url, child, timeout=START_TIMEOUT_SECONDS, status=None, log_file=log_file)
        yield Live(name=name, port=port, pid=child.pid, log_file=log_file)
    finally:
        stop_process(child)


def upstream(folder: Path, name: str = "upstream") -> AbstractContextManager[Live]:
    """tests/security/upstream_app.py under uvicorn: a small upstream for the gateway."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.security.upstream_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--timeout-graceful-shutdown",
        "0",
    ]
    return process(name, command, port, folder)


def gateway(
    folder: Path, routes: Mapping[str, str], ports: Mapping[str, int], **settings: str
) -> AbstractContextManager[Live]:
    """``python -m gateway serve`` in front of ``ports`` (service name -> port)."""
    topology = write_topology(folder, routes, ports)
    port = free_port()
    env = {
        "SHOP_TOPOLOGY": str(topology),
        "SHOP_REPLICAS": "",
        "GATEWAY_ROUTES": json.dumps(routes),
    }
    env.update({f"GATEWAY_{key.upper()}": value for key, value in settings.items()})
    command = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return process("gateway", command, port, folder, env)


def raw_request(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and read the answer until the server closes or
    ``timeout``; a reset or a refused write ends the exchange too (the server's refusal)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    return received


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP/1.1 response, or None if there was none."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])
