"""``python -m bench.outage``: what a short restart costs a burst of checkouts.

The same burst (``loadtests.burst``: customers check out at once with mixed cards, each
client retrying by key once a second until it has an outcome) runs against the monolith and
the services, with the default settings, each started by the launcher on free ports and
scratch databases:

- once with nothing happening (what a checkout that meets no outage costs);
- once per victim with the victim killed with SIGKILL mid-burst and started again at once:
  the monolith itself, and each of orders, payments, inventory and cart of the services.

Per run it reports how long the victim took to be back, the checkouts lost (an approved card
that did not end confirmed), the time to an outcome (p50, p99) and any broken promise (two
orders for a key, a pending order, a capture on a rejected order, stock not conserved).

``--before DIR`` runs the same from another checkout too (``git worktree add DIR <commit>``):
its processes run that checkout's code, the burst and the report are this one's.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
import httpx2

from bench import procs
from bench.ab import served_from
from bench.deploy import ADMIN_EMAIL, ADMIN_PASSWORD, REPO, say
from launcher import Launcher
from loadtests import burst

SHAPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "monolith": ("topologies/kata-00-monolith.toml", ("monolith",)),
    "services": ("topologies/services.toml", ("orders", "payments", "inventory", "cart")),
}
KILL_AFTER_SECONDS = 0.15


@dataclass(frozen=True)
class Row:
    side: str
    shape: str
    killed: str
    back_seconds: float | None
    customers: int
    lost: int
    p50: float
    p99: float
    broken: int
    cpu_ms: float
    """Server CPU per checkout (every process of the topology), in milliseconds."""


def started(side: str, checkout: Path, shape: str, out: Path) -> AbstractContextManager[Launcher]:
    """The shape's topology served from ``checkout``'s code, on free ports."""
    return served_from(f"{side}-{shape}", checkout, SHAPES[shape][0], out)


async def kill_and_restart(launcher: Launcher, victim: str) -> float:
    pids = launcher.pids[victim]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    for _ in range(500):
        if victim not in launcher.pids:
            break
        await anyio.sleep(0.01)
    await anyio.to_thread.run_sync(launcher.start, victim)
    return time.monotonic() - killed


async def one_burst(
    launcher: Launcher, side: str, shape: str, victim: str | None, customers: int
) -> Row:
    url = launcher.gateway_url or next(iter(launcher.urls.values()))[0]
    limits = httpx2.Limits(max_connections=customers * 2 + 8)
    async with httpx2.AsyncClient(
        base_url=url, timeout=30.0, limits=limits, trust_env=False
    ) as client:
        shoppers = await burst.prepare(
            client, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD, customers=customers
        )
        back: list[float] = []
        cpu_before = server_cpu(launcher)

        async def outage() -> None:
            if victim is not None:
                await anyio.sleep(KILL_AFTER_SECONDS)
                back.append(await kill_and_restart(launcher, victim))

        await burst.check_out(client, shoppers, meanwhile=outage, give_up=90.0)
        cpu = server_cpu(launcher) - cpu_before
        broken = await burst.broken_promises(client, shoppers)
    say(f"{side} {shape} killed {victim or '-'}: {shoppers.summary()}")
    for line in broken:
        say(f"  broken: {line}")
    return Row(
        side,
        shape,
        victim or "-",
        back[0] if back else None,
        customers,
        len(shoppers.lost()),
        shoppers.percentile(0.5),
        shoppers.percentile(0.99),
        len(broken),
        # A killed process takes its CPU with it: only meaningful with nothing killed.
        cpu / customers * 1000 if victim is None else math.nan,
    )


def server_cpu(launcher: Launcher) -> float:
    """CPU seconds of every server process of the topology (workers included) so far."""
    pids = [pid for group in launcher.pids.values() for pid in group]
    return sum(procs.cpu_seconds(pid) for pid in procs.with_children(pids))


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| code | shape | killed | back in | lost | p50 | p99 | broken | server CPU/checkout |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        back = "-" if row.back_seconds is None else f"{row.back_seconds:.1f} s"
        cpu = "-" if math.isnan(row.cpu_ms) else f"{row.cpu_ms:.1f} ms"
        lines.append(
            f"| {row.side} | {row.shape} | {row.killed} | {back} |"
            f" {row.lost} of {row.customers} | {row.p50:.2f} s | {row.p99:.2f} s | {row.broken} |"
            f" {cpu} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__)
    parser.add_argument("--before", type=Path, help="another checkout to run the same against")
    parser.add_argument("--customers", type=int, default=24)
    parser.add_argument(
        "--calm-rounds", type=int, default=3, help="bursts that meet no outage, per side"
    )
    parser.add_argument("--shapes", default="monolith,services")
    parser.add_argument(
        "--calm-only", action="store_true", help="only the bursts that meet no outage"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or REPO / "bench" / "results" / f"outage-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    sides = [("after", REPO)] + ([("before", args.before.resolve())] if args.before else [])
    shapes = [shape.strip() for shape in args.shapes.split(",") if shape.strip()]
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        parser.error(f"unknown shapes {unknown}; choose from {sorted(SHAPES)}")
    rows: list[Row] = []
    started_at = time.monotonic()
    for shape in shapes:
        for side, checkout in sides:
            with started(side, checkout, shape, out) as launcher:
                calm: tuple[str | None, ...] = (None,) * args.calm_rounds
                victims = () if args.calm_only else SHAPES[shape][1]
                for victim in (*calm, *victims):
                    rows.append(anyio.run(one_burst, launcher, side, shape, victim, args.customers))
    report = (
        f"# Checkouts meeting a restart\n\n{args.customers} customers check out at once"
        " (1 in 8 declined, 1 in 8 on the slow card), each retrying by key once a second;"
        f" the victim is killed with SIGKILL {KILL_AFTER_SECONDS} s into the burst and started"
        " again at once. Lost: an approved card that did not end confirmed. Times: from the"
        " first POST /orders to the outcome. Server CPU: every process of the topology during"
        " a burst that met no outage, per checkout.\n\n"
        f"{table(rows)}\n\n"
        f"{time.monotonic() - started_at:.0f} s in all.\n"
    )
    (out / "outage.md").write_text(report)
    print(report)
    print(f"written to {out / 'outage.md'}")
    return 1 if any(row.broken for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
