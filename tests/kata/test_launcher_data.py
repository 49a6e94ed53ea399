"""The launcher for the kata: one data name for every step, and step 0 without a gateway.

``python -m launcher up --data kata`` runs any step's topology on the same databases
(``var/kata/<service>.db`` or ``shopkata_kata_<service>``), which ``python -m kata
migrate-data`` names through the same function. Step 0 has no gateway: the monolith
listens where clients go and the demo catalog is seeded through it. The process tests
start real processes on 127.0.0.1 (free ports, known pids, every one stopped).
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx2
import pytest
from sqlalchemy.engine import make_url

from kata import data, steps
from launcher import (
    Launcher,
    LauncherError,
    Timeouts,
    databases,
    processes,
    start_on_free_ports,
    topologies,
)
from launcher.__main__ import main as launcher_main
from shop.identity.tokens import write_key_file
from shop.kernel.topology import load
from tests import support
from tests.system.conftest import LauncherCli, launcher_env, pid_alive

REPO = Path(__file__).resolve().parents[2]
STEP0 = REPO / "topologies/kata-00-monolith.toml"
STEP1 = REPO / "topologies/gateway-monolith.toml"
PG = "postgresql://postgres@127.0.0.1:5432/postgres"


# --------------------------------------------------------------------------- naming


def test_a_data_name_names_the_folder_and_the_databases(tmp_path: Path) -> None:
    urls = databases.service_urls("kata", ["monolith", "catalog"], "sqlite")
    var = (Path.cwd() / "var" / "kata").resolve()
    assert urls == {
        "monolith": f"sqlite+aiosqlite:///{var / 'monolith.db'}",
        "catalog": f"sqlite+aiosqlite:///{var / 'catalog.db'}",
    }
    assert databases.service_urls("kata", ["catalog"], "sqlite", folder=tmp_path) == {
        "catalog": f"sqlite+aiosqlite:///{tmp_path.resolve() / 'catalog.db'}"
    }
    assert databases.service_urls("kata", ["monolith", "catalog"], "postgres") == {
        "monolith": "postgresql+asyncpg://postgres@127.0.0.1:5432/shopkata_kata_monolith",
        "catalog": "postgresql+asyncpg://postgres@127.0.0.1:5432/shopkata_kata_catalog",
    }
    server = "postgresql://shop:s3cret@db.internal:6543/postgres"
    assert databases.service_urls("Kata-2.x", ["orders"], server) == {
        "orders": "postgresql+asyncpg://shop:s3cret@db.internal:6543/shopkata_kata_2_x_orders"
    }
    assert databases.data_dir("kata") == Path("var/kata")
    assert databases.describe("kata", "sqlite") == "sqlite: var/kata/<service>.db"
    assert databases.describe("kata", server) == (
        "postgresql: shopkata_kata_<service> on db.internal:6543"
    )
    # A topology still names its own databases by default (what the compose tests rely on).
    topology = load(REPO / "topologies/services.toml")
    assert databases.database_name(topology, "cart") == "shopkata_services_cart"
    assert databases.postgres_urls(topology, PG)["cart"].endswith("/shopkata_services_cart")
    assert databases.postgres_urls(topology, PG, data="kata")["cart"].endswith(
        "/shopkata_kata_cart"
    )


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 64, "a..b", "a b"])
def test_a_data_name_stays_a_folder_of_var(name: str) -> None:
    with pytest.raises(ValueError, match="a data name is letters"):
        databases.check_data_name(name)
    with pytest.raises(ValueError, match="a data name is letters"):
        databases.service_urls(name, ["monolith"], "sqlite")


@pytest.mark.parametrize("choice", ["sqlite", "postgres", PG])
def test_the_kata_moves_data_between_the_databases_the_launcher_runs_on(choice: str) -> None:
    """``kata.data`` and the launcher name every step's databases with the same function."""
    for step in steps.STEPS:
        pairs = data.step_urls(step.number, choice)
        assert set(pairs) == set(step.extracts)
        topology = load(REPO / step.topology)
        launcher = databases.service_urls(
            steps.DATA_NAME, [steps.MONOLITH, *topology.services], choice
        )
        for context, (source, target) in pairs.items():
            assert source == launcher[steps.MONOLITH]
            assert target == launcher[topology.owner(context).name]
            assert target != source


def test_up_refuses_bad_ports_and_names_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = tmp_path / "two.toml"
    two.write_text(
        'name = "two"\n'
        '[services.monolith]\napp = "monolith.app:create_app"\ncontexts = ["identity"]\n'
        "port = 8100\n"
        '[services.catalog]\napp = "services.catalog.app:create_app"\ncontexts = ["catalog"]\n'
        "port = 8120\n"
    )
    assert launcher_main(["up", "--topology", str(two), "--port", "9000"]) == 1
    assert "two has no gateway and 2 services: --port has nothing to move" in (
        capsys.readouterr().err
    )
    assert launcher_main(["up", "--topology", str(STEP0), "--data", "../up"]) == 1
    assert "a data name is letters" in capsys.readouterr().err
    assert launcher_main(["status", "--data", "a/b"]) == 1
    assert "a data name is letters" in capsys.readouterr().err
    spaced = tmp_path / "spaced.toml"
    spaced.write_text(STEP0.read_text().replace('name = "kata-00-monolith"', 'name = "my shop"'))
    assert launcher_main(["up", "--topology", str(spaced)]) == 1
    assert "(the topology's name 'my shop'); pass --data NAME" in capsys.readouterr().err


def test_no_gateway_topology_seeds_through_its_one_service(tmp_path: Path) -> None:
    step0 = topologies.relocate(load(STEP0), offset=1000)
    launcher = Launcher(step0, databases={"monolith": "sqlite+aiosqlite:///x.db"}, run_dir=tmp_path)
    assert launcher.gateway_url is None
    assert launcher.entry_url == "http://127.0.0.1:9000"
    step2 = load(REPO / "topologies/kata-02-catalog.toml")
    urls = dict.fromkeys(step2.services, "sqlite+aiosqlite:///x.db")
    assert Launcher(step2, databases=urls, run_dir=tmp_path).entry_url == "http://127.0.0.1:8000"
    # Without a gateway and without one service serving identity, catalog and inventory,
    # there is nothing to seed through: a clear error, nothing started.
    headless = topologies.relocate(step2, offset=1000)
    headless = replace(headless, gateway_port=None)
    lonely = Launcher(headless, databases=urls, run_dir=tmp_path)
    assert lonely.entry_url is None
    with pytest.raises(LauncherError, match="has no gateway, and no single service serves"):
        lonely.seed()
    assert lonely.started_pids == []


@pytest.mark.parametrize("admin", [False, True], ids=["no-admin", "admin"])
def test_a_failed_seed_names_the_missing_admin_settings(tmp_path: Path, admin: bool) -> None:
    # Nothing listens on the relocated port, so the seed fails whatever the settings; the
    # error says what to set only when the admin settings are what is missing.
    step0 = topologies.relocate(load(STEP0), offset=topologies.free_port_offset(load(STEP0)))
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("IDENTITY_BOOTSTRAP_ADMIN_")
    }
    if admin:
        env |= {
            "IDENTITY_BOOTSTRAP_ADMIN_EMAIL": "admin@example.com",
            "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD": "not-a-placeholder",
        }
    launcher = Launcher(
        step0, databases={"monolith": "sqlite+aiosqlite:///x.db"}, run_dir=tmp_path, env=env
    )
    with pytest.raises(
        LauncherError, match=r"seeding \(pid \d+\) failed with exit code"
    ) as failure:
        launcher.seed()
    hint = "IDENTITY_BOOTSTRAP_ADMIN_EMAIL / IDENTITY_BOOTSTRAP_ADMIN_PASSWORD are not set"
    assert (hint in str(failure.value)) is not admin, str(failure.value)
    assert "--no-seed" in str(failure.value) or admin


# --------------------------------------------------------------------------- processes


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing-key.pem"
    assert write_key_file(path)  # 0600: identity refuses a key file others can read
    return path


@pytest.fixture
def data_name() -> Iterator[str]:
    """A fresh data name; its PostgreSQL databases (if any) are dropped afterwards."""
    name = f"kt{uuid.uuid4().hex[:10]}"
    yield name
    server = support.postgres_server_url()
    if server is not None:
        asyncio.run(_drop(server, [databases.database_name(name, "monolith")]))


async def _drop(server: str, names: list[str]) -> None:
    conn = await asyncpg.connect(make_url(server).set(drivername="postgresql").render_as_string())
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _choice() -> str:
    return support.postgres_server_url() or "sqlite"


def test_step_0_then_step_1_run_on_the_same_data(
    tmp_path: Path, key_file: Path, data_name: str
) -> None:
    """Step 0 (no gateway) is seeded through the monolith; step 1, on the same data name,
    finds the catalog there, through its gateway."""
    choice = _choice()
    (tmp_path / "data").mkdir()
    urls = databases.service_urls(data_name, ["monolith"], choice, folder=tmp_path / "data")
    server = databases.server_url(choice)
    if server is not None:
        databases.ensure_postgres_databases(server, urls)
    env = launcher_env(key_file)
    timeouts = Timeouts(migrate=90.0, ready=60.0, stop=10.0, seed=120.0)
    started: list[int] = []
    skus: set[str] = set()
    for path in (STEP0, STEP1):
        launcher = start_on_free_ports(
            load(path),
            lambda moved: Launcher(
                moved,
                databases=urls,
                run_dir=tmp_path / "run",
                env=env,
                cwd=REPO,
                timeouts=timeouts,
                progress=print,
            ),
        )
        with launcher:
            entry = launcher.entry_url
            assert entry is not None
            if path == STEP0:
                assert launcher.gateway_url is None
                assert set(launcher.pids) == {"monolith"}
                assert entry == launcher.urls["monolith"][0]
                launcher.seed(["--products", "12", "--categories", "3", "--stock", "50"])
            else:
                assert set(launcher.pids) == {"gateway", "monolith"}
                assert entry == launcher.gateway_url
                launcher.seed(["--products", "12", "--categories", "3", "--if-empty"])
            with httpx2.Client(base_url=entry, timeout=30, trust_env=False) as client:
                page = client.get("/products", params={"limit": 50})
                assert page.status_code == 200, page.text
                found = {item["sku"] for item in page.json()["items"]}
                one = client.get(f"/products/{page.json()['items'][0]['id']}")
                assert one.status_code == 200, one.text
                assert one.json()["available"] == 50
            assert len(found) == 12
            skus = skus or found
            assert found == skus, "step 1 does not see step 0's catalog"
            started += launcher.started_pids
    alive = [pid for pid in started if pid_alive(pid)]
    assert alive == [], f"still running: {alive}"


def test_cli_up_runs_step_0_on_a_data_name_without_a_gateway(
    work: Path, key_file: Path, data_name: str
) -> None:
    topology = load(STEP0)
    port = topology.services["monolith"].port + topologies.free_port_offset(topology)
    env = launcher_env(key_file, PYTHONPATH=str(REPO))
    choice = _choice()

    cli = LauncherCli(work, env)
    out = cli.up(
        "--topology",
        str(STEP0),
        "--data",
        data_name,
        "--database",
        choice,
        "--port",
        str(port),
        "--no-seed",
    )
    up = out.process
    pid = None
    try:
        out.wait_for("Ctrl-C stops every process.", timeout=120)
        output = out.text
        url = f"http://127.0.0.1:{port}"
        assert f"monolith     {url}" in output, output
        assert f"docs         {url}/docs" in output, output
        assert "gateway" not in output.split("is up on")[1], output
        if choice == "sqlite":
            assert f"sqlite: var/{data_name}/<service>.db" in output, output
            assert (work / "var" / data_name / "monolith.db").exists()
        else:
            assert f"postgresql: shopkata_{data_name}_<service>" in output, output
        assert (work / "var" / data_name / "logs" / "monolith-0.log").exists()
        sock = work / "var" / "run" / f"launcher-{data_name}.sock"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        ready = httpx2.get(f"{url}/readyz", timeout=10, trust_env=False)
        assert ready.status_code == 200, ready.text

        status = cli.run("status", "--data", data_name)
        assert status.returncode == 0, status.stdout + status.stderr
        parts = next(line.split() for line in status.stdout.splitlines() if "monolith-0" in line)
        pid = int(parts[3])
        assert parts[-1] == "running"

        down = cli.run("down", "--data", data_name)
        assert down.returncode == 0, down.stdout + down.stderr
        assert up.wait(timeout=60) == 0
        out.drain()
        assert not sock.exists()
        assert not pid_alive(pid)
    finally:
        # The launcher stops its children on SIGTERM.
        processes.stop_process(up, timeout=60)
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)  # the monolith this test saw the launcher start
        if up.stdout is not None:
            up.stdout.close()
