"""The benchmark's command line: kata steps chosen by number or range, ladders, plans."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench import report as rep
from bench import run
from bench.deploy import REPO
from bench.document import write_report
from bench.plans import FULL, HALF_LOAD, QUICK, parse_steps, parse_users
from bench.runner import Bench
from kata.steps import STEPS


def test_steps_by_list_range_and_all() -> None:
    assert [s.number for s in parse_steps("4,1,2")] == [1, 2, 4]
    assert [s.number for s in parse_steps("2-5")] == [2, 3, 4, 5]
    assert [s.number for s in parse_steps("0, 5-6, 5")] == [0, 5, 6]
    assert parse_steps("all") == list(STEPS)
    assert parse_steps("7")[0].topology.name == "services.toml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8", "STEP must be a number from 0 to 7"),
        ("x", "STEP must be a number"),
        ("-1", "STEP must be a number"),
        ("1,,2", "STEP must be a number"),
        ("5-2", "a range of steps goes up"),
    ],
)
def test_bad_steps_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_steps(text)


def test_user_ladders() -> None:
    assert parse_users("8,16") == (8, 16)
    for text in ("0", "a,b", ""):
        with pytest.raises(ValueError, match="user counts"):
            parse_users(text)


def test_the_quick_plan_gives_the_steps_a_short_ladder_and_the_full_one_the_same() -> None:
    assert (QUICK.kata_ladder, QUICK.kata_seconds) == ((8,), 6)
    assert (FULL.kata_ladder, FULL.kata_seconds) == (FULL.ladder, FULL.seconds)


def test_only_steps_needs_steps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.main(["--only-steps"])
    assert "--only-steps needs --kata or --steps" in capsys.readouterr().err


def test_every_step_topology_exists() -> None:
    for step in STEPS:
        assert (REPO / step.topology).is_file(), step.topology


def _run(
    topology: str, scenario: str, users: int, rps: float, p50: float, failures: int = 0
) -> rep.Step:
    return rep.Step(
        topology=topology,
        scenario=scenario,
        users=users,
        repeat=1,
        requests=int(rps * 10),
        failures=failures,
        rps=rps,
        p50=p50,
        p95=p50 * 2,
        p99=p50 * 3,
        cpu_seconds={topology: rps * 10 * 0.002},
    )


def test_steps_0_and_6_reuse_the_comparison_runs_and_the_report_has_a_kata_section(
    tmp_path: Path,
) -> None:
    bench = Bench(tmp_path, FULL, pinned=False)
    bench.steps += [
        _run("monolith", "shopper", 8, 400, 5, failures=1),
        _run("monolith", HALF_LOAD, 32, 200, 4),
        _run("services", "shopper", 8, 240, 9),
        _run("services", HALF_LOAD, 32, 200, 20),
        _run("services", "health", 64, 9000, 5),
    ]
    bench.processes.update({"monolith": 1, "services": 7})
    runs = bench.kata([STEPS[0], STEPS[6]], half_rate=200, measured={0: "monolith", 6: "services"})
    assert [(r.number, r.topology, r.processes, r.reused) for r in runs] == [
        (0, "step-0", 1, True),
        (6, "step-6", 7, True),
    ]
    reused = [s for s in bench.steps if s.topology.startswith("step-")]
    assert {(s.topology, s.scenario) for s in reused} == {
        ("step-0", "shopper"),
        ("step-0", HALF_LOAD),
        ("step-6", "shopper"),
        ("step-6", HALF_LOAD),
    }
    summary = write_report(bench, {"cpu": "test"}, time.monotonic(), "0 0 0", runs)
    report = (tmp_path / "report.md").read_text()
    assert "## kata steps" in report
    assert "| 6 | Extract orders and cart" in report
    assert "| 240 (8 users) | 0.60 | 20 (200 req/s) | 5.00 |" in report
    assert "kata steps:" in summary
    assert (tmp_path / "kata_steps.png").is_file()
    assert "services / monolith throughput at saturation" in report
    # The failed request of the monolith's run, reused as step 0, is counted once.
    assert "| failed requests (every run) | 1.00 | = 0 | **no** (1 over) | 1 |" in report
