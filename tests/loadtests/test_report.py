"""The benchmark's arithmetic: CPU per request, medians, ratios, targets, projection."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from bench import procs
from bench import report as rep


def step(topology: str, users: int, rps: float, p50: float = 10.0, **kw) -> rep.Step:
    defaults: dict[str, Any] = {
        "scenario": "shopper",
        "repeat": 1,
        "requests": 1000,
        "failures": 0,
        "p95": p50 * 2,
        "p99": p50 * 4,
        "cpu_seconds": {"app": 1.0},
        "locust_cpu_seconds": 0.2,
    }
    defaults.update(kw)
    return rep.Step(topology=topology, users=users, rps=rps, p50=p50, **defaults)


def test_cpu_us_per_request() -> None:
    assert rep.cpu_us_per_request(1.5, 1000) == pytest.approx(1500.0)
    assert rep.cpu_us_per_request(2.0, 0) == 0.0


def test_ratio_guards_division_by_zero() -> None:
    assert rep.ratio(3, 4) == 0.75
    assert math.isnan(rep.ratio(1, 0))


def test_summarise_takes_medians_and_sums() -> None:
    steps = [
        step("monolith", 8, 100, p50=5, cpu_seconds={"app": 1.0}, repeat=1),
        step("monolith", 8, 300, p50=9, cpu_seconds={"app": 3.0}, repeat=2, failures=2),
        step("monolith", 8, 200, p50=7, cpu_seconds={"app": 2.0}, repeat=3),
        step("monolith", 2, 50),
    ]
    rows = rep.summarise(steps)
    assert [row.users for row in rows] == [2, 8]
    row = rows[1]
    assert (row.runs, row.rps, row.p50, row.requests, row.failures) == (3, 200, 7, 3000, 2)
    assert row.cpu_us == {"app": pytest.approx(2000.0)}
    assert row.locust_cpu_us == pytest.approx(200.0)
    assert row.failure_rate == pytest.approx(2 / 3000)


def test_cpu_per_component_adds_up() -> None:
    cpu = {"gateway": 0.5, "catalog": 1.0, "inventory": 0.25}
    [row] = rep.summarise([step("services", 8, 100, requests=500, cpu_seconds=cpu)])
    assert row.cpu_us == {"catalog": 2000.0, "gateway": 1000.0, "inventory": 500.0}
    assert row.cpu_us_total == pytest.approx(3500.0)


def test_saturation_is_the_first_level_near_the_best() -> None:
    rows = rep.summarise([step("m", 2, 100), step("m", 8, 396), step("m", 32, 400)])
    top = rep.saturation(rows)
    assert top is not None
    assert top.users == 8
    assert rep.saturation([]) is None
    half = rep.nearest(rows, 4)
    assert half is not None
    assert half.users == 2


def test_targets_met_and_missed() -> None:
    mono = rep.summarise([step("monolith", 2, 300, p50=4), step("monolith", 8, 400, p50=20)])
    serv = rep.summarise([step("services", 2, 150, p50=10), step("services", 8, 200, p50=40)])
    direct = rep.summarise([step("services", 64, 300, scenario="direct")])[0]
    via = rep.summarise([step("services", 64, 270, scenario="via")])[0]
    targets = rep.evaluate_targets(mono, serv, direct=direct, via_gateway=via, failures=0)
    by_name = {target.name.split(":")[0].split(" (")[0]: target for target in targets}
    assert by_name["gateway tax"].value == pytest.approx(0.9)
    assert by_name["gateway tax"].met
    throughput = next(t for t in targets if "throughput" in t.name)
    assert throughput.value == pytest.approx(0.5)
    assert not throughput.met
    p50 = next(t for t in targets if "p50" in t.name)
    assert p50.value == pytest.approx(2.5)  # 10 ms vs 4 ms at 2 users (half of 8)
    assert not p50.met
    assert targets[-1].met


def test_fixed_rate_pair_overrides_the_ladder_for_p50() -> None:
    mono = rep.summarise([step("monolith", 8, 400, p50=20)])
    serv = rep.summarise([step("services", 8, 300, p50=40)])
    half = (
        rep.summarise([step("monolith", 32, 200, p50=4, scenario="half")])[0],
        rep.summarise([step("services", 32, 200, p50=5, scenario="half")])[0],
    )
    targets = rep.evaluate_targets(
        mono, serv, direct=None, via_gateway=None, failures=3, half_load=half
    )
    p50 = next(t for t in targets if "p50" in t.name)
    assert p50.value == pytest.approx(1.25)
    assert p50.met
    assert not targets[-1].met


def test_capacity_projection() -> None:
    [gateway, catalog] = rep.capacity_projection({"gateway": 500.0, "catalog": 2000.0}, [1000])
    assert gateway.per_core_rps == pytest.approx(2000.0)
    assert catalog.per_core_rps == pytest.approx(500.0)
    assert catalog.cores_needed[1000] == pytest.approx(2.0)
    assert gateway.cores_needed[1000] == pytest.approx(0.5)
    assert "projection" in (rep.capacity_projection.__doc__ or "")


LOCUST_LOG_END = """\
Type     Name                 # reqs      # fails |    Avg     Min     Max    Med |   req/s
--------|-----------------|-------|-------------|-------|-------|-------|-------|--------|-----------
PUT      /cart/items/[id]        511     1(0.20%) |    700       9   10001    270 |   17.01
--------|-----------------|-------|-------------|-------|-------|-------|-------|--------|-----------
         Aggregated             6264     1(0.02%) |    150       2   10001     31 |  208.55
Response time percentiles (approximated)
Type     Name                      50%    66%    75%    80%    90%    95%    98%    99%  99.9%
--------|-----------------|--------|------|------|------|------|------|------|------|------
         Aggregated                 31     45     68    100    210    470   1800   2800   6700
"""


def test_failures_in_log_reads_the_final_table() -> None:
    # A request that ended after the CSVs were written (a 504 after the gateway's timeout)
    # is in the log's last table only.
    periodic = LOCUST_LOG_END.replace("1(0.02%)", "0(0.00%)")
    assert rep.failures_in_log(periodic + LOCUST_LOG_END) == 1
    assert rep.failures_in_log(LOCUST_LOG_END + periodic) == 0
    assert rep.failures_in_log("no table at all") == 0


def test_read_locust_stats(tmp_path: Path) -> None:
    path = tmp_path / "run_stats.csv"
    path.write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
        "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
        "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
        "GET,/cart,10,0,8,9.1,2,24,100,23.1,0.0,8,9,10,11,13,15,19,22,24,24,24\n"
        ",Aggregated,1923,2,8,34.7,2.5,2259.9,848.3,274.5,0.0,8,9,11,12,22,82,380,790,"
        "2000,2300,2300\n"
    )
    stats = rep.read_locust_stats(path)
    assert stats == {
        "requests": 1923,
        "failures": 2,
        "rps": 274.5,
        "p50": 8,
        "p95": 82,
        "p99": 790,
    }
    assert rep.read_task_names(path) == {"/cart"}


def test_tables_render() -> None:
    mono = rep.summarise([step("monolith", 8, 400)])
    serv = rep.summarise([step("services", 8, 200, cpu_seconds={"gateway": 0.5, "catalog": 1})])
    ladder = rep.ladder_table(serv)
    assert "| users | req/s |" in ladder
    assert "catalog us/req" in ladder
    assert "| 8 | 200 |" in ladder
    assert "| 8 | 0.50 |" in rep.ratio_table(mono, serv)


def test_proc_readings_of_this_process() -> None:
    busy = sum(i * i for i in range(200_000))
    assert busy > 0
    assert procs.cpu_seconds(os.getpid()) > 0
    assert procs.peak_rss_kib(os.getpid()) > 0
    assert procs.cpu_seconds(2**22 + 12345) == 0.0
    assert isinstance(procs.children(os.getpid()), list)


def test_missed_targets_say_by_how_much() -> None:
    mono = rep.summarise([step("monolith", 8, 400, p50=4)])
    serv = rep.summarise([step("services", 8, 200, p50=8)])
    targets = rep.evaluate_targets(mono, serv, direct=None, via_gateway=None, failures=0)
    throughput = next(t for t in targets if "throughput" in t.name)
    assert throughput.miss == "41% off"  # 0.5 against 0.85
    assert "**no** (41% off)" in rep.targets_table(targets)
    assert targets[-1].miss == ""


def test_a_miss_by_less_than_a_percent_is_not_shown_as_met() -> None:
    mono = rep.summarise([step("monolith", 8, 400, p50=4)])
    serv = rep.summarise([step("services", 8, 339.6, p50=8)])
    targets = rep.evaluate_targets(mono, serv, direct=None, via_gateway=None, failures=0)
    throughput = next(t for t in targets if "throughput" in t.name)
    assert not throughput.met
    assert throughput.miss == "0.12% off"  # 0.849 against 0.85
    assert throughput.shown == "0.849"
    assert "| 0.849 | >= 0.85 | **no** (0.12% off) |" in rep.targets_table(targets)
    closer = rep.summarise([step("services", 8, 337.6, p50=8)])
    targets = rep.evaluate_targets(mono, closer, direct=None, via_gateway=None, failures=0)
    throughput = next(t for t in targets if "throughput" in t.name)
    assert (throughput.shown, throughput.miss) == ("0.84", "0.71% off")  # 0.844: not "1% off"


def test_the_reference_app_and_cpu_targets() -> None:
    mono = rep.summarise([step("monolith", 8, 400, cpu_seconds={"monolith": 8.0})])
    serv = rep.summarise([step("services", 8, 300, cpu_seconds={"catalog": 9.0})])
    view = rep.summarise([step("monolith", 64, 800, scenario="product")])[0]
    bare = rep.summarise(
        [step("reference", 64, 1000, scenario="product", cpu_seconds={"reference": 10.0})]
    )[0]
    targets = rep.evaluate_targets(
        mono, serv, direct=None, via_gateway=None, failures=0, product=(view, bare)
    )
    by_goal = {target.name.split(":")[0].split(" (")[0]: target for target in targets}
    product = by_goal["monolith / reference app"]
    assert product.value == pytest.approx(0.8)
    assert product.met
    mix = next(t for t in targets if "reference app's product view CPU" in t.name)
    assert mix.value == pytest.approx(0.8)  # 8,000 us per shopper request vs 10,000
    assert mix.met
    cpu = next(t for t in targets if "CPU per shopper request" in t.name)
    assert cpu.value == pytest.approx(9000 / 8000)
    assert cpu.met


def test_capacity_table_has_a_total() -> None:
    projection = rep.capacity_projection({"gateway": 500.0, "catalog": 1500.0}, [1000])
    table = rep.capacity_table(projection, [1000])
    assert "| **all** | 2,000 | 500 | 2.00 |" in table


def test_kata_steps_take_saturation_fixed_rate_and_ratios() -> None:
    rows = rep.summarise(
        [
            step("step-0", 2, 380, cpu_seconds={"monolith": 2.5}),
            step("step-0", 8, 400, cpu_seconds={"monolith": 2.6}),
            step("step-0", 32, 200, p50=4, scenario="half-load"),
            step("step-1", 8, 300, cpu_seconds={"monolith": 2.6, "gateway": 0.6}),
            step("step-1", 32, 200, p50=6, scenario="half-load", failures=1),
        ]
    )
    steps = rep.kata_steps(rows, [(0, "The monolith", "step-0", 1), (1, "Gateway", "step-1", 2)])
    zero, one = steps
    assert zero.best is not None
    assert (zero.best.users, zero.best_rps) == (2, 400)  # 380 is within 5% of the best
    assert zero.cpu_us == pytest.approx(2500.0)
    assert (zero.p50, one.p50) == (4, 6)
    assert one.cpu_us == pytest.approx(3200.0)
    assert (zero.failures, one.failures) == (0, 1)
    table = rep.kata_table(steps)
    assert "| 0 | The monolith | 1 | 400 (2 users) |  | 4 (200 req/s) |  | 2,500 |  | 0 |" in table
    second = "| 1 | Gateway | 2 | 300 (8 users) | 0.75 | 6 (200 req/s) | 1.50 | 3,200 | 1.28 | 1 |"
    assert second in table
    cpu = rep.kata_cpu_table(steps)
    assert cpu.splitlines()[0] == "| step | monolith | gateway | all |"
    assert "| 0 | 2,500 |  | 2,500 |" in cpu
    assert "| 1 | 2,600 | 600 | 3,200 |" in cpu


def test_a_kata_step_that_did_not_run_reads_not_available() -> None:
    [missing] = rep.kata_steps([], [(3, "Extract identity", "step-3", 0)])
    assert missing.best is None
    assert math.isnan(missing.cpu_us)
    assert "| 3 | Extract identity | 0 | n/a | " in rep.kata_table([missing])


def test_kata_plot(tmp_path: Path) -> None:
    rows = rep.summarise([step("step-0", 8, 400, cpu_seconds={"monolith": 2.5})])
    steps = rep.kata_steps(rows, [(0, "The monolith", "step-0", 1)])
    assert rep.plot_kata(steps, tmp_path).stat().st_size > 0


def test_missed_targets_are_explained_from_the_run_s_own_figures() -> None:
    mono = rep.summarise([step("monolith", 8, 400, cpu_seconds={"monolith": 3.0})])
    serv = rep.summarise(
        [step("services", 8, 200, cpu_seconds={"catalog": 3.0, "inventory": 2.0, "gateway": 1.0})]
    )
    view = rep.summarise([step("monolith", 64, 600, scenario="product")])[0]
    bare = rep.summarise(
        [step("reference", 64, 900, scenario="product", cpu_seconds={"reference": 0.5})]
    )[0]
    targets = rep.evaluate_targets(
        mono, serv, direct=None, via_gateway=None, failures=0, product=(view, bare)
    )
    notes = rep.why_missed(targets, mono, serv, (view, bare))
    assert len(notes) == 2
    assert "500 CPU us more per product view" in notes[0]  # 1,000 vs 500 us
    assert "3,000 CPU us more per shopper request" in notes[1]  # 6,000 vs 3,000 us
    assert "catalog 3,000, inventory 2,000, gateway 1,000" in notes[1]
    met = rep.evaluate_targets(mono, mono, direct=None, via_gateway=None, failures=0)
    assert rep.why_missed(met, mono, mono) == []
