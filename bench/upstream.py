"""``python -m bench.upstream``: the CPU one service-to-service call costs its caller.

Starts a trivial JSON server (a bare ASGI app under uvicorn, its own process, known pid) on a
free 127.0.0.1 port, pinned to CPU 0, pins this process to CPU 1, then sends the same
``GET /internal/x?ids=1&ids=2`` over sockets in each mode, interleaved, ``--rounds`` times:

- ``socket-transport``: :class:`shop.kernel.http.Upstream` given no transport, the
  production path (``httpx2`` requests handed to
  :class:`shop.kernel.transport.SocketTransport`);
- ``httpx2-pool``: the same class given ``httpx2.AsyncHTTPTransport()`` (httpx2's own socket
  pool; what every call used before aiohttp);
- ``raw-aiohttp``: a bare ``aiohttp.ClientSession`` (keep-alive pool, no cookies, no
  automatic headers), no ``Upstream``, no httpx2: the transport the shop used before, alone,
  for reference.

It prints, per mode, the median over the rounds of the caller's CPU microseconds per call
(``time.process_time``), the server's, and calls per second. A program, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import httpx2

from bench import procs
from bench.deploy import REPO
from launcher.processes import free_port, stop_process, wait_answering
from shop.kernel.http import Upstream
from shop.kernel.transport import SocketTransport

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

BODY = json.dumps({str(i): 100_000 for i in range(1, 3)}).encode()

MODES = ("socket-transport", "httpx2-pool", "raw-aiohttp")
TIMEOUT = aiohttp.ClientTimeout(sock_connect=1.0, sock_read=5.0)

Call = Callable[[], Awaitable[None]]
"""One ``GET /internal/x?ids=1&ids=2``, its answer checked and its body decoded."""


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The callee: ``/readyz`` and every other path answer a small JSON document."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def _upstream_call(upstream: Upstream) -> Call:
    async def call() -> None:
        response = await upstream.request(
            "GET", "/internal/x", params={"ids": [1, 2]}, idempotent=True
        )
        assert response.status_code == 200
        assert response.json()

    return call


def _raw_call(session: aiohttp.ClientSession, url: str) -> Call:
    params = [("ids", "1"), ("ids", "2")]

    async def call() -> None:
        async with session.get(url + "/internal/x", params=params, timeout=TIMEOUT) as response:
            content = await response.read()
            assert response.status == 200
            assert json.loads(content)

    return call


async def _open(mode: str, url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The call of ``mode`` and what closes its client."""
    if mode == "raw-aiohttp":
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=4.0),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            auto_decompress=False,
        )
        return _raw_call(session, url), session.close
    transport: httpx2.AsyncBaseTransport = (
        httpx2.AsyncHTTPTransport() if mode == "httpx2-pool" else SocketTransport()
    )
    upstream = Upstream("bench", [url], transport=transport)
    return _upstream_call(upstream), upstream.aclose


async def _run(call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    """CPU seconds of this process and wall seconds for ``calls`` calls."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    await worker(20)  # warm the pool
    cpu, wall = time.process_time(), time.perf_counter()
    share = calls // concurrency
    await asyncio.gather(*(worker(share) for _ in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(url: str, server_pid: int, args: argparse.Namespace) -> dict[str, list[Any]]:
    results: dict[str, list[Any]] = {mode: [] for mode in MODES}
    calls = args.calls - args.calls % args.concurrency
    for _ in range(args.rounds):
        for mode in results:
            call, close = await _open(mode, url)
            server_before = procs.cpu_seconds(server_pid)
            try:
                cpu, wall = await _run(call, calls, args.concurrency)
            finally:
                await close()
            server = procs.cpu_seconds(server_pid) - server_before
            results[mode].append((cpu * 1e6 / calls, server * 1e6 / calls, calls / wall))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--calls", type=int, default=4000, help="calls per mode and round")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    args = parser.parse_args(argv)
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.upstream:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    log_file = REPO / "bench" / "results" / "upstream-server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as log:
        server = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{url}/readyz", server, timeout=30, log_file=log_file)
        if pinned:
            procs.pin([server.pid], {0})
            os.sched_setaffinity(0, {1})
        results = asyncio.run(measure(url, server.pid, args))
    finally:
        stop_process(server)
    print(
        f"{args.rounds} rounds x {args.calls} calls, {args.concurrency} in flight,"
        f" pinned: {pinned}; medians over the rounds"
    )
    print("| mode | caller CPU us/call | server CPU us/call | calls/s |")
    print("|---|---|---|---|")
    for mode, rounds in results.items():
        caller, callee, rate = (statistics.median(column) for column in zip(*rounds, strict=True))
        print(f"| {mode} | {caller:,.0f} | {callee:,.0f} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
