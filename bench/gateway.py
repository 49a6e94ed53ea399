"""The gateway tax, measured: direct vs through the gateway, and vs a catch-all proxy.

python -m bench.gateway [--upstream trivial|URL] [--path /products/1] [--seconds 10]
                        [--rounds 3] [--connections 64]

Starts every server itself on 127.0.0.1 with a known pid, pinned with ``taskset`` to CPU 0
(upstream and gateway share it, so a hop's CPU shows up as lost throughput), runs ``wrk``
pinned to CPU 1, and stops exactly the pids it started. Targets run interleaved, ``--rounds``
times, and the report gives medians: requests/s, the ratio to direct, p50/p99 latency and the
servers' CPU microseconds per request. ``--upstream URL`` measures against a server you run
(the monolith, say); its CPU is then counted only if ``--upstream-pid`` names it.

Compared stacks: the gateway (raw ASGI proxy middleware on the kernel's HTTP stack, httpx2
requests over the aiohttp transport: ``gateway``; ``gateway-verify-every`` turns off
remembering verified tokens), and the design it replaced, a FastAPI catch-all route
proxying over aiohttp (``catchall-aiohttp``, ``catchall_app`` below).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from launcher.processes import free_port, stop_process, wait_answering

SERVER_CPU = "0"
LOAD_CPU = "1"
_BODY = json.dumps({"id": 1, "name": "teapot", "price": {"amount": 1999, "currency": "EUR"}})


async def trivial_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The trivial upstream: bare ASGI, one small JSON body, so the hop's cost dominates."""
    if scope["type"] != "http":
        return
    body = _BODY.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def catchall_app() -> FastAPI:
    """The baseline the gateway replaced: a FastAPI catch-all route over aiohttp."""
    upstream = os.environ["BENCH_UPSTREAM"]
    state: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await state["session"].close()

    app = FastAPI(lifespan=lifespan)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def proxy(path: str, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "connection")}
        upstream_response = await state["session"].request(
            request.method, f"{upstream}/{path}", headers=headers, data=await request.body()
        )

        async def body() -> AsyncIterator[bytes]:
            async for chunk in upstream_response.content.iter_any():
                yield chunk
            upstream_response.release()

        return StreamingResponse(
            body(),
            status_code=upstream_response.status,
            headers={
                k: v
                for k, v in upstream_response.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            },
        )

    return app


# --- the runner ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(command: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[int]:
    """Run one pinned server; yield its pid; stop exactly that pid."""
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 (our interpreter, our modules)
            ["taskset", "-c", SERVER_CPU, *command],  # noqa: S607 (taskset from PATH)
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_answering(f"http://127.0.0.1:{port}/healthz", process, timeout=20, status=None)
        yield process.pid
    finally:
        stop_process(process)


@dataclass
class Run:
    """One wrk run of one target."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def wrk(url: str, seconds: int, connections: int, pids: list[int], headers: list[str]) -> Run:
    """Load ``url`` with wrk (pinned to the load CPU) and count the servers' CPU."""
    before = sum(cpu_seconds(pid) for pid in pids)
    output = subprocess.run(  # noqa: S603 (wrk from PATH, our arguments)
        [  # noqa: S607
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            *(arg for value in headers for arg in ("-H", value)),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = sum(cpu_seconds(pid) for pid in pids) - before
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    requests = re.search(r"(\d+) requests in", output)
    if match is None or requests is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses:\n{output}")
    count = int(requests.group(1))
    return Run(
        requests_per_second=float(match.group(1)),
        p50_ms=_latency(output, "50"),
        p99_ms=_latency(output, "99"),
        cpu_us=used / count * 1e6 if pids and count else None,
    )


def main(argv: list[str] | None = None) -> None:
    """Run every target, interleaved, and print the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--upstream", default="trivial", help="'trivial' or http://HOST:PORT")
    parser.add_argument("--upstream-pid", type=int, default=None)
    parser.add_argument("--path", default="/products/1")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--header", action="append", default=[], help="a request header, 'Name: value'"
    )
    parser.add_argument("--targets", default="direct,gateway,catchall-aiohttp")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("needs wrk and taskset (apt-get install wrk util-linux)")
    python = sys.executable
    uvicorn = [python, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools"]
    uvicorn += ["--no-access-log", "--log-level", "warning", "--host", "127.0.0.1"]

    with (
        tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp,
        _upstream(args, uvicorn, Path(tmp)) as (upstream_url, upstream_pids),
    ):
        port = int(upstream_url.rsplit(":", 1)[1])
        prefix = "/" + args.path.strip("/").split("/", 1)[0]
        topology = Path(tmp) / "bench.toml"
        topology.write_text(f'name = "bench"\n[services.upstream]\napp = "bench"\nport = {port}\n')
        routes = json.dumps({prefix: "upstream", "/.well-known": "upstream"})
        results: dict[str, list[Run]] = {}
        targets = args.targets.split(",")
        with _servers(
            targets, uvicorn, python, upstream_url, (topology, routes), Path(tmp)
        ) as urls:
            for round_ in range(args.rounds):
                for target in targets:
                    url, pids = urls[target] if target != "direct" else (upstream_url, [])
                    run = wrk(
                        url + args.path,
                        args.seconds,
                        args.connections,
                        pids + upstream_pids,
                        args.header,
                    )
                    results.setdefault(target, []).append(run)
                    print(
                        f"round {round_ + 1} {target:18} {run.requests_per_second:9.0f} req/s",
                        file=sys.stderr,
                    )
        _report(args, results)


@contextmanager
def _upstream(
    args: argparse.Namespace, uvicorn: list[str], tmp: Path
) -> Iterator[tuple[str, list[int]]]:
    if args.upstream != "trivial":
        yield args.upstream.rstrip("/"), [args.upstream_pid] if args.upstream_pid else []
        return
    port = free_port()
    command = [*uvicorn, "--port", str(port), "bench.gateway:trivial_app"]
    with server(command, port, {}, tmp / "upstream.log") as pid:
        yield f"http://127.0.0.1:{port}", [pid]


@contextmanager
def _servers(
    targets: list[str],
    uvicorn: list[str],
    python: str,
    upstream: str,
    deployment: tuple[Path, str],
    tmp: Path,
) -> Iterator[dict[str, tuple[str, list[int]]]]:
    """Each target server; ``deployment`` is the gateway's topology file and routes (JSON)."""
    topology, routes = deployment
    urls: dict[str, tuple[str, list[int]]] = {}
    with ExitStack() as stack:
        for target in targets:
            if target == "direct":
                continue
            port = free_port()
            if target in ("gateway", "gateway-verify-every"):
                command = [python, "-m", "gateway", "serve", "--port", str(port)]
                env = {"SHOP_TOPOLOGY": str(topology), "GATEWAY_ROUTES": routes}
                if target.endswith("-verify-every"):
                    # The edge check without remembering verified tokens.
                    env["GATEWAY_VERIFIED_TOKEN_TTL_SECONDS"] = "0"  # noqa: S105 (a TTL)
            elif target == "catchall-aiohttp":
                command = [*uvicorn, "--port", str(port), "--factory"]
                command.append("bench.gateway:catchall_app")
                env = {"BENCH_UPSTREAM": upstream}
            else:
                raise SystemExit(f"unknown target {target}")
            pid = stack.enter_context(server(command, port, env, tmp / f"{target}.log"))
            urls[target] = (f"http://127.0.0.1:{port}", [pid])
        yield urls


def _report(args: argparse.Namespace, results: dict[str, list[Run]]) -> None:
    direct = statistics.median(r.requests_per_second for r in results.get("direct", []) or [])
    print(
        f"\nupstream {args.upstream} {args.path}"
        f"{' with ' + ', '.join(h.split(':')[0] for h in args.header) if args.header else ''}; "
        f"wrk -t1 -c{args.connections} -d{args.seconds}s "
        f"pinned to CPU {LOAD_CPU}, servers pinned to CPU {SERVER_CPU}; "
        f"medians of {args.rounds} interleaved rounds\n"
    )
    print("| target | req/s | ratio to direct | p50 ms | p99 ms | server CPU us/req |")
    print("|---|---|---|---|---|---|")
    for target, runs in results.items():
        rps = statistics.median(r.requests_per_second for r in runs)
        cpu = [r.cpu_us for r in runs if r.cpu_us is not None]
        print(
            f"| {target} | {rps:,.0f} | {rps / direct:.2f} | "
            f"{statistics.median(r.p50_ms for r in runs):.2f} | "
            f"{statistics.median(r.p99_ms for r in runs):.2f} | "
            f"{f'{statistics.median(cpu):,.0f}' if cpu else 'n/a'} |"
        )


if __name__ == "__main__":
    main()
