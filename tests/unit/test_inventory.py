"""Inventory: merging reservation lines (pure), and the stock row's arithmetic.

The database behaviour of reservations (conditional updates, concurrency, constraints) is
in tests/integration/test_inventory.py.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shop.inventory.models import StockItem
from shop.inventory.schemas import StockUpdate
from shop.inventory.service import _merge
from shop.kernel.types import MAX_INT32

HYPOTHESIS = settings(database=None, deadline=None, max_examples=300)
lines_strategy = st.lists(
    st.tuples(st.integers(min_value=1, max_value=30), st.integers(min_value=1, max_value=1000)),
    max_size=40,
)


@HYPOTHESIS
@given(lines_strategy)
def test_merge_sums_the_quantities_of_each_product(lines: list[tuple[int, int]]) -> None:
    expected: Counter[int] = Counter()
    for product_id, quantity in lines:
        expected[product_id] += quantity

    merged = _merge(lines)

    assert dict(merged) == dict(expected)
    assert sum(quantity for _, quantity in merged) == sum(quantity for _, quantity in lines)


@HYPOTHESIS
@given(lines_strategy)
def test_merge_lists_each_product_once_in_id_order(lines: list[tuple[int, int]]) -> None:
    product_ids = [product_id for product_id, _ in _merge(lines)]

    assert product_ids == sorted(set(product_ids))
    assert set(product_ids) == {product_id for product_id, _ in lines}


@HYPOTHESIS
@given(lines_strategy, st.randoms(use_true_random=False))
def test_merge_ignores_the_order_of_the_lines(
    lines: list[tuple[int, int]], rnd: random.Random
) -> None:
    shuffled = list(lines)
    rnd.shuffle(shuffled)

    assert _merge(shuffled) == _merge(lines)


def test_merge_examples() -> None:
    assert _merge([]) == []
    assert _merge([(3, 1), (1, 2), (3, 4)]) == [(1, 2), (3, 5)]
    assert _merge(iter([(2, 1)])) == [(2, 1)]


def test_available_is_on_hand_minus_reserved() -> None:
    assert StockItem(product_id=1, on_hand=10, reserved=3).available == 7
    assert StockItem(product_id=1, on_hand=3, reserved=3).available == 0


@pytest.mark.parametrize(
    "body", [{"on_hand": -1}, {"on_hand": MAX_INT32 + 1}, {}, {"on_hand": 1, "reserved": 0}]
)
def test_stock_updates_are_validated(body: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        StockUpdate.model_validate(body)
    assert StockUpdate.model_validate({"on_hand": 0}).on_hand == 0
