"""The services topology as `make up-services` runs it: every context in its own process
and database, catalog replicated, the gateway in front; the whole contract suite over TCP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from launcher import Launcher
from tests.system.conftest import (
    assert_contract_suite_passes,
    assert_fuzzing_finds_nothing,
    launched,
    launcher_env,
    require_services,
)

SERVICES = {"identity", "catalog", "inventory", "cart", "orders", "payments"}


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, signing_key_file: Path
) -> Iterator[Launcher]:
    require_services()
    tmp = tmp_path_factory.mktemp("services")
    with launched(
        "topologies/kata-06-services.toml",
        tmp,
        launcher_env(signing_key_file),
        replicas="catalog=2",
    ) as launcher:
        yield launcher


def test_every_service_and_the_gateway_run_with_their_own_database(services: Launcher) -> None:
    assert set(services.urls) == {"gateway", *SERVICES}
    assert len(services.urls["catalog"]) == 2
    assert {name: len(pids) for name, pids in services.pids.items()} == {
        "gateway": 1,
        "identity": 1,
        "catalog": 2,
        "inventory": 1,
        "cart": 1,
        "orders": 1,
        "payments": 1,
    }
    assert len(set(services.databases.values())) == len(SERVICES)
    assert services.gateway_url is not None
    ready = httpx2.get(f"{services.gateway_url}/readyz", timeout=10, trust_env=False)
    assert ready.status_code == 200, ready.text
    # Public: the gateway names no service; each service's own port tells its own checks.
    assert ready.json()["checks"] == {"upstreams": "ok"}
    for name in SERVICES:
        for url in services.urls[name]:
            direct = httpx2.get(f"{url}/readyz", timeout=10, trust_env=False)
            assert direct.status_code == 200, (url, direct.text)


def test_contract_suite_passes_through_the_gateway(
    services: Launcher, signing_key_file: Path
) -> None:
    assert services.gateway_url is not None
    assert_contract_suite_passes(services.gateway_url, signing_key_file)


def test_fuzzing_through_the_gateway_finds_nothing(services: Launcher) -> None:
    """The monolith's schema-driven fuzzing run, against the gateway's merged schema; no
    process of the topology (gateway, any service) may log a traceback."""
    assert services.gateway_url is not None
    logs = sorted((services.run_dir / "logs").glob("*.log"))  # migrations' logs too
    processes = {"gateway", "catalog-1", *(f"{name}-0" for name in SERVICES)}
    assert processes <= {log.stem for log in logs}, logs
    assert_fuzzing_finds_nothing(services.gateway_url, logs)


def test_seed_loads_the_demo_catalog_through_the_gateway(services: Launcher) -> None:
    services.seed(["--products", "12", "--categories", "3", "--stock", "50"])
    assert services.gateway_url is not None
    with httpx2.Client(base_url=services.gateway_url, timeout=30, trust_env=False) as client:
        page = client.get("/products", params={"sku": "SEED-00012"}).json()
        assert len(page["items"]) == 1, page
        product = client.get(f"/products/{page['items'][0]['id']}").json()
    assert product["available"] == 50
    # --if-empty: a second run finds the catalog seeded and changes nothing.
    services.seed(["--products", "12", "--categories", "3", "--stock", "50", "--if-empty"])
