"""Temporal matching core vs the independent reference: exact, order-free, idempotent."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import GpuSample, GridIntensityEvent
from schemas.units import HOUR_MS
from streams.matching.core import (
    BIN_MS,
    Factors,
    GpuState,
    IntensityBook,
    UnalignedPeriodError,
    apply_sample,
    emission_record,
)
from tests.examples import EXAMPLES
from tests.reference_matching import reference

NAN, INF = float("nan"), float("inf")

T0 = 1_672_531_200_000  # 2023-01-01T00:00Z


def sample(gpu: str, seq: int, start: int, end: int, jobs: list[tuple[str, int]]) -> GpuSample:
    return {
        "gpu_uuid": gpu,
        "gpu_index": 0,
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "mig_instance": None,
        "seq": seq,
        "start_ms": start,
        "end_ms": end,
        "energy_mj": sum(e for _, e in jobs),
        "energy_method": "counter",
        "flags": [],
        "power_w": 0.0,
        "power_limit_w": 700.0,
        "utilization_pct": 0.0,
        "memory_used_bytes": 0,
        "temperature_c": 0.0,
        "jobs": [
            {
                "job_id": job,
                "tenant": "acme",
                "model": None,
                "share": 1.0 / len(jobs),
                "energy_mj": energy,
                "sharing": "time_sliced",
                "prompt_tokens": 0,
                "generation_tokens": 0,
            }
            for job, energy in jobs
        ],
    }


def event(
    i: int,
    start: int,
    minutes: int,
    value: float,
    *,
    signal: str = "average",
    variant: str = "lifecycle",
    revision: int = 0,
    published: int = 0,
) -> GridIntensityEvent:
    return {
        "event_id": f"p:DE:{signal}:{variant}:{start}:{revision}:{i}",
        "zone": "DE",
        "period_start_ms": start,
        "period_end_ms": start + minutes * 60_000,
        "intensity_g_per_kwh": value,
        "signal": signal,  # type: ignore[typeddict-item]
        "variant": variant,  # type: ignore[typeddict-item]
        "provider": "p",
        "kind": "measured",
        "estimation_method": None,
        "revision": revision,
        "published_at_ms": published,
    }


def run_core(
    arrivals: list[tuple[str, Any]],
) -> dict[tuple[int, str, str, str, str], dict[str, Any]]:
    book = IntensityBook()
    states: dict[str, GpuState] = {}
    for kind, item in arrivals:
        if kind == "event":
            book.apply(item)
        else:
            state = states.setdefault(item["gpu_uuid"], GpuState("h1", "fra", "DE", "H100"))
            apply_sample(state, item)
    out = {}
    for uuid, state in states.items():
        for key in state.hours:
            rec = emission_record(
                uuid, state, key, book, Factors(), status="final", revision=0, now_ms=0
            )
            out[(key.hour_start_ms, "h1", uuid, key.job_id, key.tenant)] = {
                "bins_mj": sum(state.hours[key].bins_mj),
                "record": rec,
            }
    return out


def assert_matches(core: dict[Any, dict[str, Any]], ref: dict[Any, Any]) -> None:
    assert set(core) == set(ref)
    for key, row in ref.items():
        got = core[key]
        assert got["bins_mj"] == pytest.approx(row.energy_mj, rel=1e-9, abs=1e-6)
        for signal, expected in (("average", row.average_g), ("marginal", row.marginal_g)):
            priced = got["record"][signal]
            if expected is None:
                assert priced is None, (key, signal)
            else:
                assert priced is not None, (key, signal)
                assert priced["emissions_g"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_an_hour_straddling_sample_is_split_in_proportion_to_time() -> None:
    s = sample("g", 0, T0 + HOUR_MS - 600_000, T0 + HOUR_MS + 1_200_000, [("j", 3_600_000)])
    events = [event(0, T0, 60, 100.0), event(1, T0 + HOUR_MS, 60, 400.0)]
    core = run_core([("event", events[0]), ("sample", s), ("event", events[1])])
    first = core[(T0, "h1", "g", "j", "acme")]["record"]
    second = core[(T0 + HOUR_MS, "h1", "g", "j", "acme")]["record"]
    # 1/3 of 3.6 MJ = 1.2 MJ = 1/3000 kWh at 100 g/kWh; 2/3 at 400 g/kWh
    assert first["energy_mj"] == 1_200_000 and second["energy_mj"] == 2_400_000
    assert first["average"]["emissions_g"] == pytest.approx(100 / 3000)
    assert second["average"]["emissions_g"] == pytest.approx(400 * 2 / 3000)
    assert first["marginal"] is None  # no marginal intensity: never borrowed from average
    assert first["coverage"] == pytest.approx(600_000 / HOUR_MS)


def test_intensity_is_multiplied_per_piece_never_average_times_average() -> None:
    # half the energy at 0 g/kWh, half at 1000: the right answer is not mean(E) x mean(I)
    s1 = sample("g", 0, T0, T0 + 1_800_000, [("j", 9_000_000)])
    s2 = sample("g", 1, T0 + 1_800_000, T0 + HOUR_MS, [("j", 1_000_000)])
    events = [event(0, T0, 30, 0.0), event(1, T0 + 1_800_000, 30, 1000.0)]
    core = run_core([("sample", s1), ("sample", s2), *(("event", e) for e in events)])
    rec = core[(T0, "h1", "g", "j", "acme")]["record"]
    assert rec["average"]["emissions_g"] == pytest.approx(1_000_000 / 3.6e9 * 1000)
    assert rec["average"]["intensity_g_per_kwh"] == pytest.approx(100.0)


def test_revisions_replace_and_duplicates_do_not_count_twice() -> None:
    s = sample("g", 0, T0, T0 + HOUR_MS, [("j", 3_600_000_000)])  # 1 kWh
    old, new = event(0, T0, 60, 300.0), event(1, T0, 60, 250.0, revision=1)
    for order in ([old, new], [new, old]):
        core = run_core([("sample", s), ("sample", s), *(("event", e) for e in order)])
        rec = core[(T0, "h1", "g", "j", "acme")]["record"]
        assert rec["energy_mj"] == 3_600_000_000
        assert rec["average"]["emissions_g"] == pytest.approx(250.0)
        assert rec["average"]["intensity_event_ids"] == [new["event_id"]]


def test_periods_off_the_five_minute_grid_are_refused() -> None:
    with pytest.raises(UnalignedPeriodError):
        IntensityBook().apply(event(0, T0 + 60_000, 5, 100.0))


def test_unpriced_energy_is_reported_as_a_fraction() -> None:
    s = sample("g", 0, T0, T0 + HOUR_MS, [("j", 3_600_000)])
    core = run_core([("sample", s), ("event", event(0, T0, 30, 200.0))])
    rec = core[(T0, "h1", "g", "j", "acme")]["record"]
    assert rec["average"]["priced_fraction"] == pytest.approx(0.5)


def test_site_factors_are_separate_columns() -> None:
    state = GpuState("h1", "fra", "DE", "NVIDIA H100 80GB HBM3")
    apply_sample(state, sample("g", 0, T0, T0 + HOUR_MS, [("j", 3_600_000_000)]))
    factors = Factors(
        pue={"fra": 1.25},
        wue_l_per_kwh={"fra": 0.4},
        embodied_g_per_gpu_hour={"H100": 30.0, "H100 80GB": 35.0},
    )
    (key,) = state.hours
    rec = emission_record(
        "g", state, key, IntensityBook(), factors, status="final", revision=0, now_ms=0
    )
    assert (rec["energy_kwh"], rec["facility_energy_kwh"], rec["water_l"]) == (1.0, 1.25, 0.5)
    assert rec["embodied_g"] == pytest.approx(35.0)  # the longest matching model name
    assert rec["average"] is None and rec["marginal"] is None


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[list[tuple[str, Any]], list[GpuSample], list[GridIntensityEvent]]:
    samples: list[GpuSample] = []
    for gpu in ("g0", "g1")[: draw(st.integers(1, 2))]:
        t = T0 + draw(st.integers(0, 60)) * 60_000 + draw(st.integers(0, 999))
        for seq in range(draw(st.integers(1, 12))):
            length = draw(st.sampled_from([250, 1000, 61_000, 299_999, 1_234_567, 3_600_000]))
            jobs = draw(
                st.lists(
                    st.tuples(st.sampled_from(["train", "infer"]), st.integers(0, 10**9)),
                    min_size=1,
                    max_size=2,
                    unique_by=lambda j: j[0],
                )
            )
            samples.append(sample(gpu, seq, t, t + length, jobs))
            t += length + draw(st.sampled_from([0, 0, 0, 5_000]))
    events: list[GridIntensityEvent] = []
    for i in range(draw(st.integers(0, 14))):
        minutes = draw(st.sampled_from([5, 30, 60]))
        start = T0 - HOUR_MS + draw(st.integers(0, 5 * 60 // minutes)) * minutes * 60_000
        events.append(
            event(
                i,
                start,
                minutes,
                draw(st.floats(0, 1500, allow_nan=False)),
                signal=draw(st.sampled_from(["average", "marginal"])),
                variant=draw(st.sampled_from(["lifecycle", "direct"])),
                revision=draw(st.integers(0, 2)),
                published=draw(st.integers(0, 3)),
            )
        )
    arrivals: list[tuple[str, Any]] = [("sample", s) for s in samples] + [
        ("event", e) for e in events
    ]
    arrivals += (
        draw(st.lists(st.sampled_from(arrivals), max_size=6)) if arrivals else []
    )  # duplicates
    random.Random(draw(st.integers(0, 2**32))).shuffle(arrivals)
    return arrivals, samples, events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_streaming_core_equals_the_reference_in_any_order(
    scenario: tuple[list[tuple[str, Any]], list[GpuSample], list[GridIntensityEvent]],
) -> None:
    arrivals, samples, events = scenario
    ref = reference([("h1", "DE", s) for s in samples], events)
    assert_matches(run_core(arrivals), ref)
    # integer energy: hours of a GPU and job sum exactly to its samples
    core = run_core(arrivals)
    for gpu in {s["gpu_uuid"] for s in samples}:
        for job in {j["job_id"] for s in samples for j in s["jobs"]}:
            want = sum(
                j["energy_mj"]
                for s in samples
                if s["gpu_uuid"] == gpu
                for j in s["jobs"]
                if j["job_id"] == job
            )
            got = sum(
                r["record"]["energy_mj"] for k, r in core.items() if k[2] == gpu and k[3] == job
            )
            assert got == want


def test_bins_are_five_minutes() -> None:
    assert HOUR_MS // BIN_MS == 12


def test_absurd_intensity_and_endless_periods_are_refused_before_pricing() -> None:
    from streams.matching.core import AbsurdIntensityError, check_event

    good: GridIntensityEvent = {**EXAMPLES["grid_intensity"]}  # type: ignore[typeddict-item]
    check_event(good, 2000.0, 24 * HOUR_MS)
    cases = {
        "intensity_not_finite": [{"intensity_g_per_kwh": v} for v in (NAN, INF, -INF)],
        "intensity_negative": [{"intensity_g_per_kwh": -500.0}],
        "intensity_above_ceiling": [{"intensity_g_per_kwh": 1e6}],
        "period_too_long": [{"period_start_ms": 0}],  # from 1970: 5.6 M bins otherwise
    }
    for code, changes in cases.items():
        for change in changes:
            with pytest.raises(AbsurdIntensityError) as err:
                check_event({**good, **change}, 2000.0, 24 * HOUR_MS)  # type: ignore[typeddict-item]
            assert err.value.code == code, change
