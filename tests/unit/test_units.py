"""schemas/units.py: the one largest-remainder split every room uses."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from schemas.units import DAY_MS, HOUR_MS, MINUTE_MS, largest_remainder, split_by_key


def test_time_constants() -> None:
    assert (MINUTE_MS, HOUR_MS, DAY_MS) == (60_000, 3_600_000, 86_400_000)


@given(
    st.integers(0, 10**12),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=12).filter(lambda w: sum(w) > 0),
)
def test_parts_sum_to_the_total_and_stay_within_one_of_the_exact_share(
    total: int, weights: list[int]
) -> None:
    parts = largest_remainder(total, weights)
    assert sum(parts) == total and len(parts) == len(weights)
    whole = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert abs(part - Fraction(total * weight, whole)) < 1
        assert weight > 0 or part == 0


def test_the_left_units_go_to_the_largest_remainders_ties_to_the_earlier() -> None:
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert largest_remainder(2, [1, 1, 1]) == [1, 1, 0]
    assert largest_remainder(7, [0.5, 0.25, 0.25]) == [3, 2, 2]  # 3.5, 1.75, 1.75
    assert largest_remainder(100, [3, 0, 1]) == [75, 0, 25]


def test_split_by_key_ties_to_the_smaller_key_and_leaves_out_zero_parts() -> None:
    assert split_by_key(1, {"b": 1, "a": 1}) == {"a": 1}
    assert split_by_key(5, {"b": 1, "a": 1, "z": 0, "n": -3}) == {"a": 3, "b": 2}
    assert split_by_key(0, {"a": 1}) == {} and split_by_key(5, {"a": 0}) == {}
