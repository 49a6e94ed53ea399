"""What the benchmark reads about its own processes, from /proc (Linux only)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one live process (0.0 once it is gone)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of one live process, in KiB (0 once it is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Every descendant of a process (uvicorn's workers), depth first."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            direct = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, direct):
            found.append(child)
            found.extend(children(child))
    return found


def with_children(pids: Iterable[int]) -> list[int]:
    every = []
    for pid in pids:
        every.append(pid)
        every.extend(children(pid))
    return every


def pin(pids: Iterable[int], cpus: set[int]) -> None:
    """Pin every thread of every process (threads started later inherit it)."""
    for pid in pids:
        try:
            tasks = [int(task.name) for task in (PROC / str(pid) / "task").iterdir()]
        except OSError:
            continue
        for tid in tasks:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                continue


def cpu_model() -> str:
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    try:
        return " ".join((PROC / "loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
