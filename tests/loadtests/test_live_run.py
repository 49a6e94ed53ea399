"""One short real run: Locust (a subprocess, so gevent never patches this process) against
a seeded monolith on loopback; zero failures and every task of the mix seen."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import report as rep
from launcher.processes import free_port, stop_process, wait_answering
from shop.identity.tokens import write_key_file
from tests import support

REPO = Path(__file__).resolve().parents[2]
LOCUST_SECONDS = 6
PASSES = 3
TASK_NAMES = {
    "/auth/register",
    "/auth/token",
    "/categories",
    "/products?category",
    "/products?q",
    "/products/[id]",
    "/cart",
    "/cart/items/[id]",
    "/cart/items/[id] DELETE",
    "/orders POST",
    "/orders",
    "/orders/[id]",
}


@pytest.fixture(scope="module")
def seeded_monolith(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("loadtest-monolith")
    url = asyncio.run(support.create_scratch_database(tmp))
    key_file = tmp / "signing-key.pem"
    assert write_key_file(key_file)  # 0600: identity refuses a key file others can read
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "IDENTITY_SIGNING_KEY_FILE": str(key_file),
        "IDENTITY_ARGON2_TIME_COST": "1",
        "IDENTITY_ARGON2_MEMORY_KIB": "64",
        "IDENTITY_ARGON2_PARALLELISM": "1",
        "IDENTITY_BOOTSTRAP_ADMIN_EMAIL": support.ADMIN_EMAIL,
        "IDENTITY_BOOTSTRAP_ADMIN_PASSWORD": support.ADMIN_PASSWORD,
    }
    env.pop("IDENTITY_SIGNING_KEY_PEM", None)
    try:
        asyncio.run(support.migrate(url))
        port = free_port()
        log_file = tmp / "server.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [sys.executable, "-m", "monolith", "serve", "--port", str(port)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_answering(f"{base_url}/readyz", process, timeout=30, log_file=log_file)
            subprocess.run(  # noqa: S603
                [
                    *(sys.executable, "-m", "loadtests.seed", "--base-url", base_url),
                    *("--products", "30", "--categories", "5"),
                    *("--admin-email", support.ADMIN_EMAIL),
                    *("--admin-password", support.ADMIN_PASSWORD),
                ],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
                timeout=60,
            )
            yield base_url
        finally:
            stop_process(process)
    finally:
        asyncio.run(support.drop_scratch_database(url))


def test_short_locust_run_has_no_failures_and_every_task(
    seeded_monolith: str, tmp_path: Path
) -> None:
    # The rarest task (`GET /orders/[id]`, weight 1, only for a user who already checked
    # out) may not come up in one short run on a loaded machine: further short runs, up to
    # PASSES in all, until every task was seen; every run must be free of failures.
    seen: set[str] = set()
    output = ""
    for attempt in range(1, PASSES + 1):
        prefix = tmp_path / f"run{attempt}"
        command = [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            str(REPO / "loadtests" / "locustfile.py"),
            "--headless",
            "-u",
            "10",
            "-r",
            "10",
            "-t",
            f"{LOCUST_SECONDS}s",
            "--host",
            seeded_monolith,
            "--csv",
            str(prefix),
            "--only-summary",
            "--exit-code-on-error",
            "1",
            "--stop-timeout",
            "5",
        ]
        env = {**os.environ, "LOADTEST_WAIT": "0", "PYTHONWARNINGS": "ignore"}
        result = subprocess.run(  # noqa: S603 (our virtualenv's locust)
            command,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=LOCUST_SECONDS + 60,
        )
        output = result.stdout[-3000:] + result.stderr[-3000:]
        assert result.returncode == 0, output
        stats = rep.read_locust_stats(prefix.parent / f"{prefix.name}_stats.csv")
        assert stats["requests"] > 0, output
        assert stats["failures"] == 0, output
        seen |= rep.read_task_names(prefix.parent / f"{prefix.name}_stats.csv")
        if seen >= TASK_NAMES:
            return
    missing = TASK_NAMES - seen
    raise AssertionError(f"tasks never ran in {PASSES} runs: {sorted(missing)}\n{output}")
