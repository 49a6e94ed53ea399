"""The measuring: :class:`Bench` runs Locust against a deployment and records every step
(throughput, latency percentiles, failures, and the CPU seconds of every server process and
of Locust itself), the warm-up, the ladder, the fixed-rate and reference steps, the flame
graphs of ``--profile``, and each kata step's topology in turn."""

from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from bench import procs
from bench import report as rep
from bench.deploy import REPO, Deployment, kata_step, say, step_label
from bench.lag import Lag, drain, event_lags
from bench.load import SERVER_CPUS, locust_command
from bench.plans import HALF_LOAD, HALF_LOAD_USERS, Plan
from kata import steps as kata
from launcher import LauncherError

T = TypeVar("T")


@dataclass
class Bench:
    out: Path
    plan: Plan
    pinned: bool
    steps: list[rep.Step] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    processes: dict[str, int] = field(default_factory=dict)
    """Server processes of each deployment measured."""
    profiling: bool = False
    """Record a flame graph of every server process (``--profile``)."""
    lags: dict[str, list[Lag]] = field(default_factory=dict)
    """Per deployment: the lag of the events its consumers applied at half load."""

    def locust(
        self,
        deployment: Deployment,
        *,
        scenario: str,
        users: int,
        seconds: int,
        repeat: int,
        host: str | None = None,
        label: str | None = None,
        record: bool = True,
        wait: str = "0",
    ) -> rep.Step | None:
        """One Locust run; the CPU of every server process is read before and after."""
        name = label or scenario
        prefix = self.out / "locust" / f"{deployment.name}-{name}-u{users}-r{repeat}"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LOADTEST_SCENARIO": scenario,
            "LOADTEST_WAIT": wait,
            "PYTHONWARNINGS": "ignore",
        }
        command = locust_command(host or deployment.url, users, seconds, prefix, pinned=self.pinned)
        before = deployment.cpu()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with (prefix.parent / f"{prefix.name}.log").open("wb") as log:
            result = subprocess.run(  # noqa: S603 (our virtualenv's locust)
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=seconds + 60,
                check=False,
            )
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = deployment.cpu()
        if not record:
            return None
        stats = rep.read_locust_stats(prefix.parent / f"{prefix.name}_stats.csv")
        log_text = (prefix.parent / f"{prefix.name}.log").read_text(errors="replace")
        failures = max(int(stats["failures"]), rep.failures_in_log(log_text))
        locust_cpu = (children_after.ru_utime + children_after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        step = rep.Step(
            topology=deployment.name,
            scenario=name,
            users=users,
            repeat=repeat,
            requests=int(stats["requests"]),
            failures=failures,
            rps=stats["rps"],
            p50=stats["p50"],
            p95=stats["p95"],
            p99=stats["p99"],
            cpu_seconds={key: max(0.0, after[key] - before.get(key, 0.0)) for key in after},
            locust_cpu_seconds=locust_cpu,
        )
        self.steps.append(step)
        cpu_us = rep.cpu_us_per_request(sum(step.cpu_seconds.values()), step.requests)
        say(
            f"{deployment.name:<10} {name:<15} {users:>4} users: {step.rps:8,.0f} req/s"
            f"  p50 {step.p50:g} p95 {step.p95:g} p99 {step.p99:g} ms"
            f"  failed {step.failures}  server {cpu_us:,.0f} us/req"
        )
        if step.failures or result.returncode:
            self.failures.append(f"{prefix.name}: {step.failures} failed, exit {result.returncode}")
        return step

    def prepare(self, deployment: Deployment, ladder: Sequence[int] | None = None) -> None:
        self.processes[deployment.name] = sum(len(pids) for pids in deployment.groups.values())
        if self.pinned:
            procs.pin([pid for pids in deployment.pids().values() for pid in pids], SERVER_CPUS)
        say(f"{deployment.name}: warming up ({self.plan.warmup_seconds} s)")
        self.locust(
            deployment,
            scenario="shopper",
            users=max(ladder or self.plan.ladder) // 2 or 1,
            seconds=self.plan.warmup_seconds,
            repeat=0,
            label="warmup",
            record=False,
        )

    def ladder(
        self,
        deployment: Deployment,
        ladder: Sequence[int] | None = None,
        seconds: int | None = None,
    ) -> None:
        self.ladders([deployment], ladder, seconds)

    def ladders(
        self,
        deployments: Sequence[Deployment],
        ladder: Sequence[int] | None = None,
        seconds: int | None = None,
    ) -> None:
        """The shopper ladder against each deployment, interleaved: every step of it runs
        against each in turn, the order alternating (A B, B A, ...), so that a drift of the
        shared machine's load falls on all of them alike."""
        runs = [
            (repeat, users)
            for repeat in range(1, self.plan.repeats + 1)
            for users in ladder or self.plan.ladder
        ]
        self._in_turns(deployments, runs, seconds=seconds or self.plan.seconds)

    def _in_turns(
        self,
        deployments: Sequence[Deployment],
        runs: Sequence[tuple[int, int]],
        *,
        seconds: int,
        label: str | None = None,
        wait: str = "0",
    ) -> None:
        """The shopper mix, each run (repeat, users) against every deployment in turn, the
        order alternating from one run to the next.

        Between turns, a deployment's consumers finish applying the events of its run
        (:func:`bench.lag.drain`) before the next deployment's run starts: a backlog applied
        meanwhile would take the next run's core and count in neither run's CPU."""
        for turn, (repeat, users) in enumerate(runs):
            for deployment in alternated(deployments, turn):
                self.locust(
                    deployment,
                    scenario="shopper",
                    users=users,
                    seconds=seconds,
                    repeat=repeat,
                    label=label,
                    wait=wait,
                )
                if deployment.consumers and len(deployments) > 1:
                    took, applied = drain(deployment.consumers, quiet=1.0)
                    if applied:
                        say(
                            f"{deployment.name}: {applied:,} events applied after it ({took:.1f} s)"
                        )

    def reference(self, runs: Sequence[tuple[Deployment, str, str, str]]) -> None:
        """Interleaved reference steps, each repeat: (deployment, label, scenario, host).

        The CPU of each step is read from its own deployment, so the shop and the reference
        app can take turns against the same core in one run.
        """
        for repeat in range(1, self.plan.reference_repeats + 1):
            for deployment, label, scenario, host in runs:
                self.locust(
                    deployment,
                    scenario=scenario,
                    users=self.plan.reference_users,
                    seconds=self.plan.reference_seconds,
                    repeat=repeat,
                    host=host,
                    label=label,
                )

    def profile(self, deployment: Deployment, users: int) -> None:
        """The shopper mix once more, not recorded, with py-spy sampling every server process:
        one flame graph (SVG) per process in ``profiles/``. Sampling costs the servers some
        CPU, so it runs apart from the measured steps."""
        if not self.profiling:
            return
        py_spy = Path(sys.executable).parent / "py-spy"
        folder = self.out / "profiles"
        folder.mkdir(parents=True, exist_ok=True)
        seconds = self.plan.seconds
        samplers = []
        for component, pids in deployment.pids().items():
            for index, pid in enumerate(pids):
                name = f"{deployment.name}-{component}" + (f"-{index}" if index else "")
                if len(pids) > 1 and pid in deployment.names:
                    # Its replicas and its worker, as the launcher names them.
                    name = f"{deployment.name}-{deployment.names[pid]}"
                command = [str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds)]
                command += ["--rate", "200", "--nonblocking", "--format", "flamegraph"]
                command += ["--output", str(folder / f"{name}.svg")]
                log = (folder / f"{name}.log").open("wb")
                samplers.append(
                    (
                        name,
                        subprocess.Popen(  # noqa: S603 (our virtualenv's py-spy)
                            command, stdout=log, stderr=subprocess.STDOUT
                        ),
                        log,
                    )
                )
        say(f"{deployment.name}: profiling {len(samplers)} process(es) for {seconds} s")
        self.locust(
            deployment,
            scenario="shopper",
            users=users,
            seconds=seconds,
            repeat=0,
            label="profile",
            record=False,
        )
        for name, sampler, log in samplers:
            try:
                sampler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
            log.close()
            svg = folder / f"{name}.svg"
            if sampler.returncode or not svg.exists():
                self.failures.append(f"profile of {name}: py-spy exit {sampler.returncode}")
            else:
                say(f"flame graph {svg.relative_to(self.out)}")

    def fixed_rate(self, deployment: Deployment, rate: float, seconds: int | None = None) -> None:
        self.fixed_rates([deployment], rate, seconds)

    def fixed_rates(
        self, deployments: Sequence[Deployment], rate: float, seconds: int | None = None
    ) -> None:
        """The shopper mix at a fixed total rate (tasks/s) over HALF_LOAD_USERS users, against
        each deployment in turn (alternating, as the ladder); then the lag of the events that
        happened meanwhile, from each one's consumers' inboxes.

        The consumers first catch up with the step before (:func:`bench.lag.drain`)."""
        for deployment in deployments:
            if deployment.consumers:
                took, applied = drain(deployment.consumers)
                say(
                    f"{deployment.name}: events of the step before applied ({applied:,} more"
                    f" in {took:.1f} s); the fixed rate starts"
                )
        since = datetime.now(UTC)
        self._in_turns(
            deployments,
            [(repeat, HALF_LOAD_USERS) for repeat in range(1, self.plan.reference_repeats + 1)],
            seconds=seconds or self.plan.seconds,
            label=HALF_LOAD,
            wait=f"rate:{rate / HALF_LOAD_USERS:.4f}",
        )
        until = datetime.now(UTC)
        for deployment in deployments:
            if not deployment.consumers:
                continue
            try:
                self.lags[deployment.name] = event_lags(deployment.consumers, since, until)
            except Exception as exc:  # a measurement, not the run: say it, keep going
                self.failures.append(f"event lag of {deployment.name}: {exc}")

    def remember_memory(self, deployment: Deployment) -> None:
        self.memory[deployment.name] = deployment.peak_rss_mib()

    def best_rps(self, topology: str) -> float:
        return max(
            (s.rps for s in self.steps if s.topology == topology and s.scenario == "shopper"),
            default=0.0,
        )

    def kata(
        self,
        steps: Sequence[kata.Step],
        half_rate: float | None,
        measured: Mapping[int, str] | None = None,
    ) -> list[KataRun]:
        """Each step's topology in turn: warm-up, the step ladder, the fixed-rate run.

        The fixed rate is ``half_rate`` (half the monolith's best, from the comparison) or,
        without one, half the best throughput of the first step measured here. ``measured``
        maps a step to a deployment already measured in this run with the same ladder and
        rate (step 0 is the monolith, step 6 the services): its runs are reused, not repeated.
        """
        runs = []
        ladder, seconds = self.plan.kata_ladder, self.plan.kata_seconds
        for step in steps:
            label = step_label(step.number)
            source = (measured or {}).get(step.number)
            if source is not None:
                say(f"kata step {step.number}: the {source} runs above measured it already")
                self.steps.extend(
                    dataclasses.replace(run, topology=label)
                    for run in list(self.steps)
                    if run.topology == source and run.scenario in ("shopper", HALF_LOAD)
                )
                self.processes[label] = self.processes[source]
                runs.append(
                    KataRun(step.number, step.title, label, self.processes[label], reused=True)
                )
                continue
            say(f"kata step {step.number}: {step.title} ({step.topology})")
            try:
                with kata_step(self.out, self.plan, step) as deployment:
                    self.prepare(deployment, ladder)
                    self.ladder(deployment, ladder, seconds)
                    if half_rate is None:
                        half_rate = self.best_rps(deployment.name) / 2
                        say(
                            f"kata: the fixed rate is half of step {step.number}'s best,"
                            f" {half_rate:,.0f} req/s"
                        )
                    self.fixed_rate(deployment, half_rate, seconds)
                    self.remember_memory(deployment)
            except (LauncherError, RuntimeError, subprocess.SubprocessError) as exc:
                # One step that cannot start (or run) does not cost the other steps' figures.
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                say(f"kata step {step.number} failed: {exc}")
                self.failures.append(f"kata step {step.number}: {first}")
            runs.append(KataRun(step.number, step.title, label, self.processes.get(label, 0)))
        return runs


def alternated(sides: Sequence[T], turn: int) -> Sequence[T]:
    """The sides (deployments, or what measures them) in their order on even turns,
    reversed on odd ones."""
    return sides if turn % 2 == 0 else list(reversed(sides))


@dataclass(frozen=True)
class KataRun:
    """A kata step that ran: what the report needs besides its Locust steps."""

    number: int
    title: str
    topology: str
    processes: int
    reused: bool = False
    """Its runs are those of the comparison's monolith or services, not runs of its own."""
