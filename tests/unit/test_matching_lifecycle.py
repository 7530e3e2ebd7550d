"""The hour lifecycle on an injected clock: provisional, final, revised, quiet hosts."""

from __future__ import annotations

from schemas.errors import RejectedInputError
from schemas.units import HOUR_MS
from streams.matching.admission import check_sample
from streams.matching.core import (
    Factors,
    HourEnergy,
    HourKey,
    IntensityBook,
    intensity_version,
)
from streams.matching.lifecycle import Emitted, HostState, Policy, ingest, tick
from tests.unit.test_matching_core import T0, event, sample

POLICY = Policy(grace_ms=60_000, max_wait_ms=600_000, live_every_ms=5_000, retention_ms=2 * HOUR_MS)


def host_with(*samples: object, seen_at: int = 0) -> HostState:
    state = HostState("h1", partition=0, last_seen_ms=seen_at)
    for s in samples:
        assert ingest(state, "DE", "fra", s)  # type: ignore[arg-type]
    return state


def reason_code(rejection: RejectedInputError | None) -> str | None:
    """The stable code of a rejection (None: the sample is accepted)."""
    return None if rejection is None else rejection.code


def test_open_hours_report_provisional_records_at_most_every_few_seconds() -> None:
    state = host_with(sample("g", 0, T0, T0 + 60_000, [("j", 1000)]), seen_at=T0)
    book = IntensityBook()
    first = tick(state, book, Factors(), T0 + 61_000, POLICY)
    assert [r["energy_mj"] for r in first.live] == [1000] and first.hourly == []
    ingest(state, "DE", "fra", sample("g", 1, T0 + 60_000, T0 + 120_000, [("j", 500)]))
    assert tick(state, book, Factors(), T0 + 62_000, POLICY).live == []  # throttled
    later = tick(state, book, Factors(), T0 + 67_000, POLICY)
    assert [r["energy_mj"] for r in later.live] == [1500]
    assert tick(state, book, Factors(), T0 + 80_000, POLICY).live == []  # nothing new


def test_an_hour_closes_when_the_watermark_passes_its_end_plus_grace() -> None:
    state = host_with(
        sample("g", 0, T0 + HOUR_MS - 1000, T0 + HOUR_MS + 30_000, [("j", 3100)]), seen_at=T0
    )
    book = IntensityBook()
    assert tick(state, book, Factors(), T0 + HOUR_MS, POLICY).hourly == []  # within grace
    ingest(
        state,
        "DE",
        "fra",
        sample("g", 1, T0 + HOUR_MS + 30_000, T0 + HOUR_MS + 61_000, [("j", 10)]),
    )
    out = tick(state, book, Factors(), T0 + HOUR_MS, POLICY)
    assert [(r["hour_start_ms"], r["status"], r["revision"]) for r in out.hourly] == [
        (T0, "final", 0)
    ]


def test_a_quiet_hosts_hour_closes_on_the_clock() -> None:
    state = host_with(
        sample("g", 0, T0 + 600_000, T0 + 660_000, [("j", 1000)]), seen_at=T0 + 661_000
    )
    book = IntensityBook()
    # event time never passes the hour's end: only the clock can close it
    assert tick(state, book, Factors(), T0 + HOUR_MS + 599_000, POLICY).hourly == []
    out = tick(state, book, Factors(), T0 + HOUR_MS + 600_000, POLICY)
    assert [r["status"] for r in out.hourly] == ["final"]
    assert out.hourly[0]["coverage"] == 60_000 / HOUR_MS


def test_late_intensity_and_late_samples_revise_a_closed_hour() -> None:
    state = host_with(sample("g", 0, T0, T0 + 600_000, [("j", 3_600_000)]), seen_at=T0)
    book = IntensityBook()
    now = T0 + 2 * HOUR_MS
    (final,) = tick(state, book, Factors(), now, POLICY).hourly
    assert final["average"] is None
    book.apply(event(0, T0, 60, 200.0))
    (revised,) = tick(state, book, Factors(), now + 1000, POLICY).hourly
    assert (revised["status"], revised["revision"]) == ("revised", 1)
    assert revised["average"] is not None and revised["average"]["emissions_g"] == 0.2
    assert tick(state, book, Factors(), now + 2000, POLICY).hourly == []  # nothing changed
    ingest(state, "DE", "fra", sample("g", 1, T0 + 600_000, T0 + 1_200_000, [("j", 3_600_000)]))
    (again,) = tick(state, book, Factors(), now + 3000, POLICY).hourly
    assert (again["revision"], again["energy_mj"]) == (2, 7_200_000)
    assert again["record_id"] == final["record_id"] == revised["record_id"]


def test_old_closed_hours_are_forgotten_and_samples_for_them_refused() -> None:
    state = host_with(sample("g", 0, T0, T0 + 60_000, [("j", 10)]), seen_at=T0)
    ingest(
        state, "DE", "fra", sample("g", 1, T0 + 4 * HOUR_MS, T0 + 4 * HOUR_MS + 60_000, [("j", 10)])
    )
    priced = IntensityBook()
    priced.apply(event(0, T0, 60, 200.0))  # a priced hour goes at retention
    tick(state, priced, Factors(), T0 + 4 * HOUR_MS, POLICY)
    assert {k.hour_start_ms for k in state.gpus["g"].hours} == {T0 + 4 * HOUR_MS}
    late = sample("g", 2, T0 + 1000, T0 + 2000, [("j", 10)])
    assert reason_code(check_sample(late, state, T0 + 4 * HOUR_MS, POLICY)) == "too_late"
    # a caller that tracks the watermark passes it; the verdict is the same
    watermark = state.watermark_ms
    assert reason_code(check_sample(late, state, T0 + 4 * HOUR_MS, POLICY, watermark)) == (
        "too_late"
    )
    assert check_sample(late, state, T0 + 4 * HOUR_MS, POLICY, T0 + HOUR_MS) is None


def test_an_unpriced_closed_hour_stays_beyond_retention_until_its_price_revises_it() -> None:
    """The start-up race: an hour closed before its price was read must not leave state
    with the (short) retention, or the price that comes next never reaches it."""
    state = host_with(sample("g", 0, T0, T0 + 600_000, [("j", 3_600_000)]), seen_at=T0)
    book = IntensityBook()
    (final,) = tick(state, book, Factors(), T0 + 2 * HOUR_MS, POLICY).hourly
    assert final["average"] is None
    # the watermark moves 5 h on: beyond the 2 h retention, within the 72 h for unpriced
    ingest(
        state, "DE", "fra", sample("g", 1, T0 + 5 * HOUR_MS, T0 + 5 * HOUR_MS + 60_000, [("j", 1)])
    )
    tick(state, book, Factors(), T0 + 5 * HOUR_MS, POLICY)
    assert T0 in {k.hour_start_ms for k in state.gpus["g"].hours}
    book.apply(event(0, T0, 60, 200.0))  # the price, at last
    out = tick(state, book, Factors(), T0 + 5 * HOUR_MS, POLICY)
    revised = [r for r in out.hourly if r["hour_start_ms"] == T0]
    assert [(r["status"], r["revision"]) for r in revised] == [("revised", 1)]
    assert revised[0]["average"] is not None and revised[0]["average"]["emissions_g"] == 0.2
    # priced now: it goes at the next tick, like any closed hour beyond retention
    tick(state, book, Factors(), T0 + 5 * HOUR_MS + 1000, POLICY)
    assert T0 not in {k.hour_start_ms for k in state.gpus["g"].hours}
    # and without a price it goes after unpriced_retention_ms
    late = host_with(sample("g", 0, T0, T0 + 600_000, [("j", 3_600_000)]), seen_at=T0)
    tick(late, IntensityBook(), Factors(), T0 + 2 * HOUR_MS, POLICY)
    far = T0 + 80 * HOUR_MS
    ingest(late, "DE", "fra", sample("g", 1, far, far + 60_000, [("j", 1)]))
    tick(late, IntensityBook(), Factors(), far, POLICY)
    assert T0 not in {k.hour_start_ms for k in late.gpus["g"].hours}


def test_a_sample_across_three_hours_marks_every_hour_it_touches() -> None:
    state = host_with(sample("g", 0, T0, T0 + 60_000, [("j", 10)]), seen_at=T0)
    middle = HourKey(T0 + HOUR_MS, "j", "t")
    state.gpus["g"].hours[middle] = HourEnergy()  # an hour that exists, then clean
    state.keys_by_hour[T0 + HOUR_MS] = {"g": {middle: None}}
    state.emitted[("g", middle)] = Emitted(dirty=False)
    ingest(state, "DE", "fra", sample("g", 1, T0 + 1000, T0 + 2 * HOUR_MS + 1000, [("j", 30)]))
    hours = {k.hour_start_ms for (_, k), e in state.emitted.items() if e.dirty}
    assert hours == {T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS}


def test_absurd_samples_are_refused_with_a_reason() -> None:
    state = HostState("h1")
    now = T0 + HOUR_MS
    cases = {
        "empty_interval": sample("g", 0, T0, T0, [("j", 1)]),
        "negative_energy": sample("g", 0, T0, T0 + 1000, [("j", -5)]),
        "absurd_power": sample("g", 0, T0, T0 + 1000, [("j", 1_500_000)]),  # 1.5 kW on 700 W
        "future_timestamp": sample("g", 0, now + HOUR_MS, now + HOUR_MS + 1000, [("j", 1)]),
    }
    for code, bad in cases.items():
        assert reason_code(check_sample(bad, state, now, POLICY)) == code
    odd = sample("g", 0, T0, T0 + 1000, [("j", 5)])
    odd["energy_mj"] = 6
    assert reason_code(check_sample(odd, state, now, POLICY)) == "inconsistent_jobs"
    old = Policy(max_age_ms=HOUR_MS // 2)
    too_old = check_sample(sample("g", 0, T0, T0 + 1000, [("j", 1)]), state, now, old)
    assert reason_code(too_old) == "too_old"


def test_settled_hours_are_skipped_until_intensity_or_a_late_sample_changes_them() -> None:
    state = host_with(seen_at=T0)
    keep = Policy(grace_ms=60_000, max_wait_ms=600_000, retention_ms=6 * HOUR_MS)
    for hour in range(4):  # 3 GPUs, hours 0-3; the watermark closes hours 0-2
        for g in ("g0", "g1", "g2"):
            start = T0 + hour * HOUR_MS
            ingest(state, "DE", "fra", sample(g, hour, start, start + 60_000, [("j", 100)]))
    book = IntensityBook()
    now = T0 + 4 * HOUR_MS
    closed = tick(state, book, Factors(), now, keep)
    assert sorted({r["hour_start_ms"] for r in closed.hourly}) == [
        T0 + h * HOUR_MS for h in range(3)
    ]
    assert sorted(state.settled) == [T0 + h * HOUR_MS for h in range(3)]

    looked: list[tuple[str, int]] = []

    def versions(zone: str, hour: int) -> tuple[str | None, ...]:
        looked.append((zone, hour))
        return intensity_version(book, zone, hour)

    again = tick(state, book, Factors(), now + 1000, keep, versions=versions)
    assert again.hourly == []
    # a settled hour costs one version lookup, not one per key; the open hour 3 is visited
    assert sorted(h for _, h in looked if h < T0 + 3 * HOUR_MS) == [
        T0 + h * HOUR_MS for h in range(3)
    ]

    book.apply(event(1, T0 + HOUR_MS, 60, 400.0))  # intensity for hour 1 arrives
    priced = tick(state, book, Factors(), now + 2000, keep)
    assert {(r["hour_start_ms"], r["status"]) for r in priced.hourly} == {(T0 + HOUR_MS, "revised")}
    assert len(priced.hourly) == 3  # one per GPU

    ingest(state, "DE", "fra", sample("g0", 99, T0 + 120_000, T0 + 180_000, [("j", 50)]))
    assert T0 not in state.settled  # a late sample unsettles its hour
    late = tick(state, book, Factors(), now + 3000, keep)
    assert [(r["hour_start_ms"], r["gpu_uuid"], r["energy_mj"]) for r in late.hourly] == [
        (T0, "g0", 150)
    ]
