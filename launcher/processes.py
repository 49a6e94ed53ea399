"""Ports and processes on this machine: the one place that finds a free port, waits for a
started server to answer, and stops a process.

Every caller (the launcher, the benchmarks, the system tests) starts its processes itself
and keeps their ``Popen``: a process is only ever stopped by the pid it was started with
(SIGTERM, a bounded wait, then SIGKILL), never looked up by name. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx2

from shop.kernel.topology import HOST

__all__ = [
    "LOG_TAIL_LINES",
    "STOP_TIMEOUT",
    "NotReady",
    "ProcessError",
    "free_port",
    "indent",
    "kill_group",
    "log_tail",
    "port_is_free",
    "reap",
    "stop",
    "stop_process",
    "wait_answering",
]

STOP_TIMEOUT = 10.0
"""Seconds a process is given to exit after SIGTERM before it gets SIGKILL."""
LOG_TAIL_LINES = 40

Process = subprocess.Popen[Any]


class ProcessError(RuntimeError):
    """A process we started did not do what it should (answer, or die)."""


class NotReady(ProcessError):
    """A started server exited, or did not answer in time; the message shows its log's end."""

    def __init__(
        self,
        url: str,
        process: Process,
        *,
        waited: float,
        last: str,
        log_file: Path | None,
    ) -> None:
        self.url, self.pid, self.waited, self.last = url, process.pid, waited, last
        self.exit_code = process.poll()
        self.log_file = log_file
        if self.exit_code is not None:
            what = f"exited with code {self.exit_code} before it answered at {url}"
        else:
            what = f"did not answer at {url} within {waited:g} s (last: {last})"
        message = f"pid {process.pid} {what}"
        if log_file is not None:
            message += f"; last lines of {log_file}:\n" + indent(log_tail(log_file))
        super().__init__(message)


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (the system picks it; a race stays possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a listening socket could be bound to ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (empty if there is none)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def indent(text: str) -> str:
    """Log lines set off under a message."""
    return "\n".join(f"    | {line}" for line in text.splitlines()) or "    | (empty)"


def wait_answering(
    url: str,
    process: Process,
    *,
    timeout: float | None = None,
    deadline: float | None = None,
    status: int | None = 200,
    log_file: Path | None = None,
    client: httpx2.Client | None = None,
) -> None:
    """Return once ``url`` answers ``status`` (any status when None); raise :class:`NotReady`
    as soon as ``process`` exits, or at the deadline (``timeout`` seconds from now, or the
    ``time.monotonic()`` value ``deadline``, shared by several waits)."""
    started = time.monotonic()
    if deadline is None:
        if timeout is None:
            raise ValueError("give a timeout or a deadline")
        deadline = started + timeout
    last = "no answer"
    owned = client is None
    http = httpx2.Client(trust_env=False) if client is None else client
    try:
        while True:
            if process.poll() is not None:
                raise NotReady(
                    url, process, waited=time.monotonic() - started, last=last, log_file=log_file
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotReady(
                    url, process, waited=time.monotonic() - started, last=last, log_file=log_file
                )
            try:
                response = http.get(url, timeout=max(0.1, min(2.0, remaining)))
            except httpx2.TransportError as exc:
                last = type(exc).__name__
            else:
                if status is None or response.status_code == status:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    finally:
        if owned:
            http.close()


def stop(
    processes: Iterable[Process],
    timeout: float = STOP_TIMEOUT,
    *,
    on_kill: Callable[[Process], None] | None = None,
) -> None:
    """Stop our own processes: SIGTERM to each that still runs, then one shared wait of
    ``timeout`` seconds, then SIGKILL (``on_kill`` is told first) to whichever outlives it.
    Every process is reaped."""
    live = []
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            live.append(process)
    deadline = time.monotonic() + timeout
    for process in live:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill(process)
            reap(process)


def stop_process(process: Process, timeout: float = STOP_TIMEOUT) -> None:
    """Stop one process of ours: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    stop([process], timeout)


def reap(process: Process, timeout: float = STOP_TIMEOUT) -> None:
    """Kill a process of ours if it still runs, and collect its exit status."""
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover (a kernel-level hang)
        raise ProcessError(f"pid {process.pid} did not die after SIGKILL") from exc


def kill_group(process: Process) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and everything it started
    (its process group), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    reap(process)
