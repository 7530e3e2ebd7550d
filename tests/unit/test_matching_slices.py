"""A host's state stored as one slice per hour: round trip, what a batch writes, and a
crash that stored only some of a batch's slices."""

from __future__ import annotations

import pickle
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import GpuSample
from schemas.units import HOUR_MS
from streams.matching.core import Factors, IntensityBook, SeqSet
from streams.matching.lifecycle import HostState, HourSlice, host_of, ingest, slice_of, tick
from tests.unit.test_matching_core import T0, sample
from tests.unit.test_matching_lifecycle import POLICY


def stored(state: HostState, slices: dict[int, HourSlice]) -> None:
    """Write what changed, as the worker does (a pickled copy, like the changelog)."""
    changed, forgotten = state.take_changes()
    for hour in changed:
        part = slice_of(state, hour)
        assert part is not None
        slices[hour] = pickle.loads(pickle.dumps(part))
    for hour in forgotten:
        slices.pop(hour, None)


def energy_by_key(state: HostState) -> dict[tuple[str, int, str], int]:
    return {
        (uuid, key.hour_start_ms, key.job_id): energy.energy_mj
        for uuid, gpu in state.gpus.items()
        for key, energy in gpu.hours.items()
    }


@st.composite
def traces(draw: st.DrawFn) -> list[GpuSample]:
    """Two GPUs' consecutive samples of 1 s to 2.5 h: many straddle hour boundaries."""
    out = []
    for gpu in ("g0", "g1"):
        start = T0 + draw(st.integers(0, HOUR_MS))
        for seq in range(draw(st.integers(1, 12))):
            duration = draw(st.sampled_from([1000, 60_000, 1_800_000, 3_600_000, 9_000_000]))
            jobs = [("a", draw(st.integers(0, 10**6)))]
            if draw(st.booleans()):
                jobs.append(("b", draw(st.integers(0, 10**6))))
            out.append(sample(gpu, seq, start, start + duration, jobs))
            start += duration
    return out


def test_slices_make_up_the_host_again() -> None:
    state = HostState("h1", partition=3, last_seen_ms=T0)
    for i in range(6):  # 20-minute samples from 00:50: hours 0, 1 and 2, one straddling
        start = T0 + 50 * 60_000 + i * 20 * 60_000
        ingest(state, "DE", "fra", sample("g", i, start, start + 20 * 60_000, [("j", 100 + i)]))
    slices: dict[int, HourSlice] = {}
    stored(state, slices)
    assert sorted(slices) == [T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS]
    again = host_of(list(slices.values()))
    assert (again.host, again.partition, again.last_seen_ms) == ("h1", 3, T0)
    assert again.gpus == state.gpus and again.emitted == state.emitted
    assert again.watermark_ms == state.watermark_ms


def test_a_batch_writes_only_the_hours_it_touched_and_forgetting_deletes() -> None:
    state = HostState("h1", partition=0, last_seen_ms=T0)
    slices: dict[int, HourSlice] = {}
    for hour in range(4):
        start = T0 + hour * HOUR_MS
        ingest(state, "DE", "fra", sample("g", hour, start, start + 60_000, [("j", 10)]))
    stored(state, slices)
    ingest(
        state,
        "DE",
        "fra",
        sample("g", 9, T0 + 3 * HOUR_MS + 60_000, T0 + 3 * HOUR_MS + 120_000, [("j", 5)]),
    )
    assert state.take_changes() == ([T0 + 3 * HOUR_MS], [])
    # hour 0 is closed and more than 2 h (POLICY's retention) behind the watermark (and
    # unpriced hours go at retention here too)
    short = replace(POLICY, unpriced_retention_ms=0)
    tick(state, IntensityBook(), Factors(), T0 + 4 * HOUR_MS, short)
    changed, forgotten = state.take_changes()
    assert forgotten == [T0] and T0 not in changed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(), st.data())
def test_a_crash_that_stored_some_slices_of_a_batch_loses_and_doubles_nothing(
    samples: list[GpuSample], data: st.DataObject
) -> None:
    exact = HostState("h1")
    for s in samples:
        ingest(exact, "DE", "fra", s)

    live = HostState("h1")
    slices: dict[int, HourSlice] = {}
    cut = data.draw(st.integers(0, len(samples)), label="committed batches end here")
    crash = data.draw(st.integers(cut, len(samples)), label="the batch that crashed ends here")
    for s in samples[:cut]:
        ingest(live, "DE", "fra", s)
    stored(live, slices)  # the batches before the crash, all stored (offsets committed)
    for s in samples[cut:crash]:
        ingest(live, "DE", "fra", s)
    changed, _ = live.take_changes()
    for hour in data.draw(st.sets(st.sampled_from(changed)) if changed else st.just(set())):
        part = slice_of(live, hour)  # the crash: only these slices reached the changelog
        assert part is not None
        slices[hour] = pickle.loads(pickle.dumps(part))

    recovered = host_of(list(slices.values())) if slices else HostState("h1")
    for s in samples[cut:]:  # redelivered from the committed offset
        ingest(recovered, "DE", "fra", s)
    assert energy_by_key(recovered) == energy_by_key(exact)


def test_applied_sequences_are_a_run_plus_stragglers_from_any_start() -> None:
    applied = SeqSet()
    for seq in (500, 502, 501, 499, 510):
        applied.add(seq)
    assert (applied.lo, applied.upto, applied.extra) == (499, 503, {510})
    assert all(s in applied for s in (499, 500, 501, 502, 510))
    assert not any(s in applied for s in (0, 498, 503, 509, 511))


def test_state_pickled_before_the_prices_module_moved_still_loads() -> None:
    """GlobalTable changelogs written before the intensity book moved to
    streams.matching.prices name streams.matching.core.Price: they must still load."""
    import pickle

    from streams.matching.prices import Price

    price = Price((2, 5, "e1"), 123.5, "e1", "em", False)
    old = pickle.dumps([price, None], protocol=0).replace(
        b"streams.matching.prices", b"streams.matching.core"
    )
    assert b"streams.matching.core" in old
    assert pickle.loads(old) == [price, None]
