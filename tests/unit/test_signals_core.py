"""Carbon-aware signals without I/O, on the shipped real intensity where it matters."""

from __future__ import annotations

import csv
import itertools
from datetime import UTC, datetime
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.units import HOUR_MS
from streams.signals.core import (
    Candidate,
    EcoPolicy,
    EcoTier,
    FlexibleJob,
    SignalInputError,
    Weights,
    brute_force_window,
    follow_the_sun,
    rank,
)


def shipped(zone: str, month: str | None = None) -> dict[int, float]:
    """Hour start (ms) -> lifecycle gCO2e/kWh from the shipped Electricity Maps file."""
    folder = resources.files("agents") / "data" / "grid"
    with (folder / f"{zone}_2023_hourly.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    return {
        int(datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() * 1000): float(r[5])
        for r in rows
        if month is None or r[0].startswith(month)
    }


@pytest.mark.parametrize("zone", ["US-CAL-CISO", "DE"])
def test_eco_tier_on_a_real_month_respects_hysteresis_and_covers_high_carbon_hours(
    zone: str,
) -> None:
    policy = EcoPolicy()  # 14-day window, eco from the 70th percentile, normal below 55th
    tier = EcoTier(zone, policy)
    year = sorted(shipped(zone).items())
    march_start = int(datetime(2023, 3, 1, tzinfo=UTC).timestamp() * 1000)
    april_start = int(datetime(2023, 4, 1, tzinfo=UTC).timestamp() * 1000)
    warm_up = march_start - policy.window_h * HOUR_MS  # a full window of history first
    decisions = [tier.observe(at, g) for at, g in year if warm_up <= at < april_start]
    first = decisions[: policy.min_history_h - 1]
    assert [d.mode for d in first] == ["unknown"] * len(first)
    month = [d for d in decisions if d.at_ms >= march_start]
    assert len(month) == 31 * 24  # UTC: every hour of March
    changes = [d for d in month if d.changed]
    # no flapping: consecutive changes at least the dwell time apart
    times = [d.at_ms for d in changes]
    assert all(b - a >= policy.min_dwell_h * HOUR_MS for a, b in itertools.pairwise(times))
    assert len(changes) <= len(month) / policy.min_dwell_h
    # every switch has its reason: into eco at or above the enter percentile, out of it
    # below the leave percentile
    for d in changes:
        assert d.percentile is not None
        if d.mode == "eco":
            assert d.percentile >= policy.enter_pct
        else:
            assert d.percentile < policy.leave_pct
    # eco in the high-carbon hours: at least 90 % of the month's top decile
    cut = sorted(d.intensity_g_per_kwh or 0 for d in month)[int(len(month) * 0.9)]
    top = [d for d in month if (d.intensity_g_per_kwh or 0) >= cut]
    assert sum(d.mode == "eco" for d in top) / len(top) >= 0.9
    assert 0.1 < sum(d.mode == "eco" for d in month) / len(month) < 0.5


def test_stale_intensity_gives_unknown_not_a_guess() -> None:
    tier = EcoTier("DE", EcoPolicy(min_history_h=1, stale_after_h=2))
    assert tier.stale(0) is not None
    tier.observe(HOUR_MS, 300.0)
    assert tier.stale(2 * HOUR_MS) is None
    late = tier.stale(4 * HOUR_MS)
    assert late is not None and late.mode == "unknown" and "stale" in late.reason
    with pytest.raises(SignalInputError):
        tier.observe(HOUR_MS, 200.0)  # back in time


ZONES = ("DE", "FR", "GB", "US-CAL-CISO")


def test_follow_the_sun_over_the_shipped_zones_matches_brute_force() -> None:
    series = {zone: shipped(zone, "2023-06") for zone in ZONES}
    start = int(datetime(2023, 6, 10, tzinfo=UTC).timestamp() * 1000)
    for duration in (1, 4, 9):
        job = FlexibleJob(
            energy_kwh=120.0,
            duration_h=duration,
            earliest_start_ms=start,
            deadline_ms=start + 72 * HOUR_MS,
            zones=ZONES,
            home_zone="DE",
        )
        answer = follow_the_sun(job, series, now_ms=start)
        assert answer.best == brute_force_window(job, series)
        assert answer.now_at_home is not None and answer.saving_g is not None
        assert answer.saving_g >= 0 and answer.best.zone == "FR"  # nuclear France wins


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["A", "B", "C"]),
        st.dictionaries(st.integers(0, 40), st.floats(0, 1000), min_size=1),
        min_size=1,
    ),
    st.integers(1, 6),
    st.integers(0, 20),
    st.integers(1, 30),
)
def test_sliding_window_search_equals_brute_force(
    raw: dict[str, dict[int, float]], duration: int, first: int, span: int
) -> None:
    series = {zone: {h * HOUR_MS: v for h, v in hours.items()} for zone, hours in raw.items()}
    job = FlexibleJob(
        energy_kwh=10.0,
        duration_h=duration,
        earliest_start_ms=first * HOUR_MS,
        deadline_ms=(first + duration + span) * HOUR_MS,
        zones=tuple(sorted(series)),
        home_zone=sorted(series)[0],
    )
    expected = brute_force_window(job, series)
    if expected is None:
        with pytest.raises(SignalInputError, match="no complete window"):
            follow_the_sun(job, series, now_ms=0)
    else:
        assert follow_the_sun(job, series, now_ms=0).best == expected


def test_follow_the_sun_refuses_what_it_cannot_answer() -> None:
    series = {"DE": shipped("DE", "2023-06")}
    job = FlexibleJob(10, 2, 0, HOUR_MS, ("DE",), "DE")
    with pytest.raises(SignalInputError, match="past"):
        follow_the_sun(job, series, now_ms=2 * HOUR_MS)
    with pytest.raises(SignalInputError, match="cannot fit"):
        follow_the_sun(job, series, now_ms=0)
    unknown = FlexibleJob(10, 1, 0, 10 * HOUR_MS, ("DE", "XX"), "DE")
    with pytest.raises(SignalInputError, match="XX"):
        follow_the_sun(unknown, series, now_ms=0)


def test_routing_ranks_by_the_documented_score_within_the_slo() -> None:
    candidates = [
        Candidate("fast-dirty", "PL", 5.0),
        Candidate("slow-clean", "FR", 40.0),
        Candidate("mid", "DE", 15.0),
        Candidate("too-slow", "NO", 200.0),
    ]
    intensity = {"PL": 700.0, "FR": 50.0, "DE": 350.0, "NO": 20.0}
    weights = Weights(
        latency=0.5, carbon=0.5, latency_ref_ms=50, carbon_ref_g_per_kwh=400, slo_ms=100
    )
    ranked = rank(candidates, intensity, weights)
    assert [r.node for r in ranked] == ["slow-clean", "mid", "fast-dirty"]
    assert ranked[0].score == pytest.approx(0.5 * 40 / 50 + 0.5 * 50 / 400)
    latency_only = rank(candidates, intensity, Weights(latency=1, carbon=0))
    assert latency_only[0].node == "fast-dirty"
    with pytest.raises(SignalInputError, match="no candidates"):
        rank([], intensity, weights)
    with pytest.raises(SignalInputError, match="XX"):
        rank([Candidate("n", "XX", 1)], intensity, weights)
    with pytest.raises(SignalInputError, match="SLO"):
        rank([Candidate("n", "NO", 500)], intensity, weights)


def test_weights_refuse_zero_references_and_non_finite_values() -> None:
    from streams.signals.core import Weights

    for bad in (
        {"latency_ref_ms": 0.0},
        {"carbon_ref_g_per_kwh": -1.0},
        {"latency": float("nan")},
        {"carbon": float("inf")},
        {"latency": -0.5},
        {"carbon": "x"},
    ):
        with pytest.raises(ValueError):
            Weights(**bad)  # type: ignore[arg-type]
