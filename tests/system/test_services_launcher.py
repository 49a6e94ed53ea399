"""The launcher on the gateway-monolith topology: real processes, known pids, all stopped.

This topology (the kata's first step) needs only the monolith and the gateway, so these
tests say whether the launcher works, independently of the services deployables.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from launcher import Launcher, LauncherError, Timeouts, processes, start_on_free_ports, topologies
from shop.kernel.topology import Topology, load
from tests import support
from tests.system.conftest import (
    GATEWAY_BUDGET_SECONDS,
    GATEWAY_CONNECT_TIMEOUT_SECONDS,
    REPO,
    LauncherCli,
    launched,
    launcher_env,
    pid_alive,
)

TOPOLOGY = "topologies/gateway-monolith.toml"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Answer:
    status: int | str
    """The HTTP status, or the name of the client error (a hang shows as a timeout)."""
    content_type: str
    seconds: float


class Poller:
    """GETs one URL over and over in a thread, recording every answer and its duration."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def _run(self) -> None:
        # A client timeout well past the gateway's budget: a hang shows up as ReadTimeout.
        with httpx2.Client(timeout=GATEWAY_BUDGET_SECONDS + 10, trust_env=False) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get(self.url)
                except httpx2.HTTPError as exc:
                    answer = Answer(type(exc).__name__, "", time.monotonic() - started)
                else:
                    content_type = response.headers.get("content-type", "")
                    answer = Answer(
                        response.status_code, content_type, response.elapsed.total_seconds()
                    )
                self.answers.append(answer)
                self._stop.wait(0.05)

    def wait_for(self, status: int, timeout: float = 20.0) -> None:
        """Keep polling until the poller itself has seen ``status`` once more (bounded)."""
        seen = len(self.answers)
        deadline = time.monotonic() + timeout
        while not any(a.status == status for a in self.answers[seen:]):
            assert time.monotonic() < deadline, f"the poller never saw {status}"
            time.sleep(0.05)

    @contextmanager
    def running(self) -> Iterator[Poller]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=GATEWAY_BUDGET_SECONDS + 15)
        assert not self._thread.is_alive(), "the poller's request never ended"


def wait_for_status(url: str, status: int = 200, timeout: float = 20.0) -> httpx2.Response:
    """GET ``url`` until it answers ``status``; bounded."""
    deadline = time.monotonic() + timeout
    last: object = None
    with httpx2.Client(timeout=GATEWAY_BUDGET_SECONDS, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(url)
            except httpx2.HTTPError as exc:
                last = exc
            else:
                if response.status_code == status:
                    return response
                last = f"{response.status_code} {response.text[:300]}"
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s; last: {last}")


def test_restart_by_name_while_the_gateway_keeps_answering(
    tmp_path: Path, signing_key_file: Path
) -> None:
    env = launcher_env(signing_key_file)
    with launched(TOPOLOGY, tmp_path, env) as launcher:
        gateway = launcher.gateway_url
        assert gateway is not None
        ready = httpx2.get(f"{gateway}/readyz", timeout=10, trust_env=False)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"upstreams": "ok"}

        # Requests through the gateway: a login, a token checked at the edge, a public read.
        with httpx2.Client(base_url=gateway, timeout=30, trust_env=False) as client:
            token = client.post(
                "/auth/token",
                data={"username": support.ADMIN_EMAIL, "password": support.ADMIN_PASSWORD},
            )
            assert token.status_code == 200, token.text
            auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
            me = client.get("/users/me", headers=auth)
            assert me.status_code == 200, me.text
            assert me.json()["email"] == support.ADMIN_EMAIL
            assert me.json()["role"] == "admin"
            created = client.post(
                "/categories", json={"slug": "launcher-test", "name": "Launcher"}, headers=auth
            )
            assert created.status_code == 201, created.text

        before = launcher.pids
        assert set(before) == {"gateway", "monolith"}
        assert len(before["monolith"]) == 1

        with Poller(f"{gateway}/categories").running() as poller:
            launcher.restart("monolith")
            poller.wait_for(200)
        after = launcher.pids
        assert after["gateway"] == before["gateway"], "the gateway was not restarted"
        assert after["monolith"] != before["monolith"]
        assert not pid_alive(before["monolith"][0])

        answers = poller.answers
        assert answers, "the poller sent nothing"
        assert {a.status for a in answers} <= {200, 503}, answers
        assert 503 in {a.status for a in answers}, "the restart was never seen through the gateway"
        assert answers[-1].status == 200, answers[-3:]
        assert max(a.seconds for a in answers) < GATEWAY_BUDGET_SECONDS, answers
        assert all(a.content_type == PROBLEM_JSON for a in answers if a.status == 503), answers

        # Stopped for good: every answer is a fast 503 problem, and readiness says so.
        launcher.stop("monolith")
        assert set(launcher.pids) == {"gateway"}
        with httpx2.Client(base_url=gateway, timeout=GATEWAY_BUDGET_SECONDS + 10) as client:
            for path in ("/categories", "/products", "/products/1", "/inventory/1"):
                started = time.monotonic()
                response = client.get(path)
                took = time.monotonic() - started
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"] == PROBLEM_JSON
                assert response.json()["type"] == "/problems/service-unavailable"
                # Nothing listens: refused at once, never later than the connect timeout.
                assert took < GATEWAY_CONNECT_TIMEOUT_SECONDS + 1.0, (path, took)
        # The gateway's readiness is cached for a second: bounded polling, not one look.
        readyz = wait_for_status(f"{gateway}/readyz", 503, timeout=10)
        assert readyz.json()["type"] == "/problems/service-unavailable"

        launcher.start("monolith")
        categories = wait_for_status(f"{gateway}/categories").json()
        assert "launcher-test" in {category["slug"] for category in categories}
        started_pids = launcher.started_pids

    assert launcher.pids == {}
    alive = [pid for pid in started_pids if pid_alive(pid)]
    assert alive == [], f"still running after stop_all: {alive}"
    ports = topologies.all_ports(launcher.topology)
    assert all(processes.port_is_free(port) for port in ports)


def test_a_process_that_cannot_start_is_named_with_its_log(
    tmp_path: Path, signing_key_file: Path
) -> None:
    topology = load(REPO / TOPOLOGY)
    topology = topologies.relocate(topology, offset=topologies.free_port_offset(topology))
    # Port 9 (discard) refuses connections: the monolith cannot reach its database.
    unreachable = "postgresql+asyncpg://nobody@127.0.0.1:9/nowhere"
    launcher = Launcher(
        topology,
        databases={"monolith": unreachable},
        run_dir=tmp_path,
        env=launcher_env(signing_key_file),
        cwd=REPO,
        timeouts=Timeouts(ready=20.0, stop=5.0),
        progress=print,
    )
    started = time.monotonic()
    with pytest.raises(LauncherError) as failure:
        launcher.start_all(migrate=False)
    assert time.monotonic() - started < 30.0
    message = str(failure.value)
    assert message.startswith("monolith-0 (pid "), message
    assert str(tmp_path / "logs" / "monolith-0.log") in message
    assert "    | " in message, "the log's tail is missing"
    assert "exited with code 3 before it was ready" in message, message  # uvicorn's startup failure
    assert "ConnectionRefusedError" in message, message  # the reason, from the log's tail
    assert launcher.pids == {}
    assert not any(pid_alive(pid) for pid in launcher.started_pids)


def _on_sqlite(topology: Topology, tmp_path: Path, signing_key_file: Path) -> Launcher:
    """A launcher of the gateway-and-monolith topology on a SQLite file in ``tmp_path``."""
    return Launcher(
        topology,
        databases={"monolith": f"sqlite+aiosqlite:///{tmp_path / 'monolith.db'}"},
        run_dir=tmp_path,
        env=launcher_env(signing_key_file),
        cwd=REPO,
        progress=print,
    )


def test_a_taken_port_is_reported_before_anything_starts(
    tmp_path: Path, signing_key_file: Path
) -> None:
    topology = load(REPO / TOPOLOGY)
    topology = topologies.relocate(topology, offset=topologies.free_port_offset(topology))
    assert topology.gateway_port is not None
    launcher = _on_sqlite(topology, tmp_path, signing_key_file)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", topology.gateway_port))
        squatter.listen()
        with pytest.raises(LauncherError, match=f"port {topology.gateway_port} for gateway"):
            launcher.start_all()
    assert launcher.started_pids == []


def test_a_port_taken_meanwhile_is_tried_again_on_other_ports(
    tmp_path: Path, signing_key_file: Path
) -> None:
    """``start_on_free_ports`` moves the topology to other free ports when one is taken
    between the pick and the bind; after its last attempt the refusal stands. Here every
    attempt finds its gateway port taken: three attempts, two retries, nothing started."""
    squatters: list[socket.socket] = []
    made: list[Launcher] = []
    retries: list[int] = []

    def make(moved: Topology) -> Launcher:
        assert moved.gateway_port is not None
        squatter = socket.socket()
        squatter.bind(("127.0.0.1", moved.gateway_port))
        squatter.listen()
        squatters.append(squatter)
        made.append(_on_sqlite(moved, tmp_path, signing_key_file))
        return made[-1]

    try:
        with pytest.raises(LauncherError, match="already in use"):
            start_on_free_ports(
                load(REPO / TOPOLOGY), make, retrying=lambda: retries.append(len(made))
            )
    finally:
        for squatter in squatters:
            squatter.close()
    assert (len(made), retries) == (3, [1, 2])
    assert len({launcher.topology.gateway_port for launcher in made}) > 1  # moved each time
    assert all(launcher.started_pids == [] for launcher in made)


def test_run_topology_round_trips_with_replicas_and_moved_ports(tmp_path: Path) -> None:
    topology = topologies.resolve(
        REPO / "topologies/services.toml", replicas="catalog=3", offset=1000, gateway_port=9999
    )
    assert topology.gateway_port == 9999
    assert topology.services["catalog"].ports == [9120, 9121, 9122]
    assert topology.services["identity"].ports == [9110]
    written = topologies.write(topology, tmp_path / "run.toml")
    again = load(written)
    assert again.services == topology.services
    assert again.gateway_port == 9999
    assert topologies.replicas_text(again).split(",")[1] == "catalog=3"


# --------------------------------------------------------------------------- the CLI


def _pids(status_output: str) -> dict[str, int]:
    """``name -> pid`` from the lines of ``python -m launcher status``."""
    pids = {}
    for line in status_output.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[2] == "pid" and parts[3].isdigit():
            pids[parts[0]] = int(parts[3])
    return pids


def test_cli_up_is_controlled_through_its_socket_and_stops_on_ctrl_c(
    work: Path, signing_key_file: Path
) -> None:
    """``up`` in the foreground as a developer runs it, driven by the control commands."""
    topology = load(REPO / TOPOLOGY)
    offset = topologies.free_port_offset(topology)
    gateway = f"http://127.0.0.1:{(topology.gateway_port or 0) + offset}"
    env = launcher_env(signing_key_file, PYTHONPATH=str(REPO))

    # The run's files (databases, logs, socket) land under the cwd's var/: the short folder.
    cli = LauncherCli(work, env)
    out = cli.up("--topology", str(REPO / TOPOLOGY), "--port-offset", str(offset), "--no-seed")
    up = out.process
    pids: dict[str, int] = {}
    try:
        out.wait_for("Ctrl-C stops every process.", timeout=90)
        output = out.text
        assert f"gateway      {gateway}" in output, output
        assert "admin        " + support.ADMIN_EMAIL in output, output
        sock = work / "var" / "run" / "launcher-gateway-monolith.sock"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert (work / "var" / "gateway-monolith" / "monolith.db").exists()
        assert (work / "var" / "gateway-monolith" / "logs" / "monolith-0.log").exists()

        status = cli.run("status")
        assert status.returncode == 0, status.stdout + status.stderr
        pids = _pids(status.stdout)
        assert set(pids) == {"monolith-0", "gateway"}, status.stdout
        assert "running" in status.stdout

        restart = cli.run("restart", "monolith")
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert "restarted monolith" in restart.stdout
        again = _pids(restart.stdout) or _pids(cli.run("status").stdout)
        pids.update({f"old-{name}": pid for name, pid in pids.items()})
        pids.update(again)
        assert pids["monolith-0"] != pids["old-monolith-0"]
        assert pids["gateway"] == pids["old-gateway"]
        assert not pid_alive(pids["old-monolith-0"])
        wait_for_status(f"{gateway}/products")

        unknown = cli.run("stop", "nosuch")
        assert unknown.returncode == 1
        assert "no service or process named 'nosuch'" in unknown.stdout

        up.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert up.wait(timeout=60) == 0
        out.drain()
        assert out.seen[-1] == "stopped", "\n".join(out.seen[-20:])
        assert not sock.exists()
        alive = [pid for pid in pids.values() if pid_alive(pid)]
        assert alive == [], f"still running after Ctrl-C: {alive}"
        assert cli.run("status").returncode == 1
    finally:
        # The launcher stops its children on SIGTERM.
        processes.stop_process(up, timeout=60)
        for pid in pids.values():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)  # a process this test saw the launcher start
        if up.stdout is not None:
            up.stdout.close()
