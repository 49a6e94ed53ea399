"""The load generator: Locust's command line for one step of the benchmark, pinned to its own
CPU (the servers get CPU 0, Locust CPU 1) when the machine has two or more."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.deploy import REPO

LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
SERVER_CPUS = {0}
LOCUST_CPUS = {1}


def locust_command(host: str, users: int, seconds: int, prefix: Path, *, pinned: bool) -> list[str]:
    locust = str(Path(sys.executable).parent / "locust")
    command = [
        locust,
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--only-summary",
        "--exit-code-on-error",
        "1",
        "--stop-timeout",
        "5",
    ]
    taskset = shutil.which("taskset")
    if pinned and taskset:
        command = [taskset, "-c", ",".join(map(str, sorted(LOCUST_CPUS))), *command]
    return command
