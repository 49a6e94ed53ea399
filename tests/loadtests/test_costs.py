"""``python -m bench.costs``: the shopper mix it weighs requests by, and the weighing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.costs import TASKS, mix, mix_weights


def test_the_weights_are_read_from_the_locustfiles_task_decorators(tmp_path: Path) -> None:
    source = tmp_path / "locustfile.py"
    source.write_text(
        "from locust import task\n"
        "class Other:\n"
        "    @task(9)\n"
        "    def elsewhere(self): ...\n"
        "class ShopperUser:\n"
        "    def on_start(self): ...\n"
        "    @task(30)\n"
        "    def browse(self): ...\n"
        "    @task\n"
        "    def view_order(self): ...\n"
    )
    assert mix_weights(source) == {"browse": 30, "view_order": 1}
    with pytest.raises(LookupError, match="no class Missing"):
        mix_weights(source, "Missing")


def test_every_task_of_the_shopper_mix_is_probed_and_nothing_else() -> None:
    weights = mix_weights()
    assert set(TASKS) == set(weights)
    assert weights["browse"] == 30
    assert weights["checkout"] == 3
    assert list(TASKS).index("checkout") < list(TASKS).index("view_order")


def test_the_mix_weighs_each_task_and_splits_the_difference_by_task() -> None:
    weights = {"read": 3, "buy": 1}
    monolith = {"read": 1_000.0, "buy": 10_000.0}
    services = {"read": 1_200.0, "buy": 20_000.0}
    mono, serv, shares = mix(weights, monolith, services)
    assert mono == pytest.approx((3 * 1_000 + 10_000) / 4)
    assert serv == pytest.approx((3 * 1_200 + 20_000) / 4)
    assert shares["buy"] == pytest.approx(10_000 / 10_600)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert mix(weights, monolith, monolith)[2] == {"read": 0.0, "buy": 0.0}
