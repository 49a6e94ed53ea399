"""Kata steps as real processes: step 1 (the gateway in front of the whole monolith) and
step 4 (catalog, identity and inventory extracted; the monolith keeps cart, orders and
payments and calls the services over HTTP). The whole contract suite runs over TCP through
the gateway, exactly as against the monolith and the services.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from kata.steps import monolith_contexts, step
from launcher import Launcher
from tests.system.conftest import (
    assert_contract_suite_passes,
    launched,
    launcher_env,
    require_services,
)

STEPS = [1, 4]
# The kata on PostgreSQL is covered by the data-move tests and the in-process contract run of
# step 4 (make test-postgres); these slow real-process runs happen once, on SQLite.
pytestmark = pytest.mark.once


@pytest.fixture(scope="module", params=STEPS, ids=[f"step-{n}" for n in STEPS])
def kata_step(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    signing_key_file: Path,
) -> Iterator[tuple[int, Launcher]]:
    number: int = request.param
    if number > 1:
        require_services()
    tmp = tmp_path_factory.mktemp(f"kata-step-{number}")
    with launched(str(step(number).topology), tmp, launcher_env(signing_key_file)) as launcher:
        yield number, launcher


def test_the_step_runs_the_services_its_topology_names(kata_step: tuple[int, Launcher]) -> None:
    number, launcher = kata_step
    extracted = {context for s in range(number + 1) for context in step(s).extracts}
    assert set(launcher.urls) == {"gateway", "monolith", *extracted}
    assert launcher.gateway_url is not None
    ready = httpx2.get(f"{launcher.gateway_url}/readyz", timeout=10, trust_env=False)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"upstreams": "ok"}
    for name in ("monolith", *extracted):
        for url in launcher.urls[name]:
            direct = httpx2.get(f"{url}/readyz", timeout=10, trust_env=False)
            assert direct.status_code == 200, (url, direct.text)


def test_the_monolith_serves_only_what_it_still_owns(kata_step: tuple[int, Launcher]) -> None:
    number, launcher = kata_step
    monolith = launcher.urls["monolith"][0]
    paths = httpx2.get(f"{monolith}/openapi.json", timeout=10, trust_env=False).json()["paths"]
    owned = set(monolith_contexts(number))
    assert ("/products" in paths) == ("catalog" in owned)
    assert ("/auth/token" in paths) == ("identity" in owned)
    assert ("/inventory/{product_id}" in paths) == ("inventory" in owned)
    assert "/orders" in paths
    assert "/cart" in paths
    # An extracted context's path is not answered by the monolith any more.
    if "catalog" not in owned:
        gone = httpx2.get(f"{monolith}/products/1", timeout=10, trust_env=False)
        assert gone.status_code == 404, gone.text
        assert gone.headers["content-type"].startswith("application/problem+json")


def test_contract_suite_passes_through_the_gateway(
    kata_step: tuple[int, Launcher], signing_key_file: Path
) -> None:
    _, launcher = kata_step
    assert launcher.gateway_url is not None
    assert_contract_suite_passes(launcher.gateway_url, signing_key_file)
