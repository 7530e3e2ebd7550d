"""The ingest over arrays (streams.matching.columnar) equals the per-sample reference
(admission.check_sample + lifecycle.ingest, one sample at a time) on random streams:
shuffled, duplicated and replayed messages, restarts through stored slices, samples
across hour boundaries and over several hours, hostile overlaps and out-of-bounds rows,
limits small enough to bind; and the hours priced by 5-, 15-, 30- and 60-minute periods.

Integer mJ, tokens and sequence sets must be identical; float sums within 1e-12 relative.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.blocks import from_block, to_block
from schemas.bounds import Bounds
from schemas.records import GpuSample, GpuSampleBatch, GridIntensityEvent
from schemas.units import HOUR_MS
from streams.matching.columnar import (
    Outcome,
    SampleMessage,
    ingest_blocks,
    ingest_messages,
    parts_of,
)
from streams.matching.columnar import ingest_one_by_one as one_by_one
from streams.matching.core import Factors, IntensityBook, SeqSet, emission_record
from streams.matching.lifecycle import HostState, Policy, host_of, slice_of

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
NOW = T0 + 30 * HOUR_MS
REL = 1e-12
MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB")


def _sample(rng: random.Random, gpu: str, seq: int, start: int, end: int) -> GpuSample:
    watts = rng.uniform(50, 650)
    energy = int(watts * (end - start)) if rng.random() > 0.05 else 0
    jobs: list[dict[str, Any]] = []
    count = rng.choice((1, 1, 1, 2, 3)) if energy else rng.choice((0, 1))
    weights = [rng.random() + 0.01 for _ in range(count)]
    left = energy
    for i, weight in enumerate(weights):
        part = left if i == count - 1 else int(energy * weight / sum(weights))
        left -= part
        jobs.append(
            {
                "job_id": f"job-{rng.randrange(4)}",
                "tenant": rng.choice(("acme", "zeta")),
                "model": rng.choice((None, "", "llama", "mistral")),
                "share": weight / sum(weights),
                "energy_mj": part,
                "sharing": "time_sliced",
                "prompt_tokens": rng.choice((0, rng.randrange(10**6))),
                "generation_tokens": rng.choice((0, rng.randrange(10**6))),
            }
        )
    if count and left:  # the shares must sum to the sample's energy
        jobs[-1]["energy_mj"] += left
    if count and len({(j["job_id"], j["tenant"]) for j in jobs}) < count:
        jobs[-1]["job_id"] = f"job-{seq}-{gpu}"
    return {
        "gpu_uuid": gpu,
        "gpu_index": int(gpu[-1]),
        "gpu_model": MODELS[int(gpu[-1]) % 2],
        "mig_instance": None,
        "seq": seq,
        "start_ms": start,
        "end_ms": end,
        "energy_mj": energy,
        "energy_method": "counter",
        "flags": [],
        "power_w": watts,
        "power_limit_w": 700.0,
        "utilization_pct": rng.uniform(0, 100),
        "memory_used_bytes": 0,
        "temperature_c": 40.0,
        "jobs": jobs,  # type: ignore[typeddict-item]
    }


def stream(rng: random.Random) -> list[GpuSampleBatch]:
    """Messages of one or two hosts: consecutive samples of 1 s to 2.5 h, in messages of
    random sizes; then duplicated, replayed, shuffled and spiked with hostile samples."""
    messages: list[GpuSampleBatch] = []
    for h in range(rng.randint(1, 2)):
        host = f"host-{h}"
        samples: list[GpuSample] = []
        for g in range(rng.randint(1, 3)):
            gpu = f"{host}-gpu{g}"
            t = T0 + rng.randrange(HOUR_MS)
            seq = rng.randrange(5)
            for _ in range(rng.randint(1, 40)):
                length = rng.choice((1000, 10_000, 60_000, 60_000, 1_000_000, 3_600_000))
                if rng.random() < 0.05:
                    length = rng.randint(HOUR_MS, 9_000_000)  # over several hours
                t += rng.choice((0, 0, 0, 0, 1, 5000))  # now and then a gap
                samples.append(_sample(rng, gpu, seq, t, t + length))
                t += length
                seq += rng.choice((1, 1, 1, 1, 2))
        _spike(rng, samples)
        if rng.random() < 0.15:
            rng.shuffle(samples)  # interleaved GPUs, out of order
        else:
            samples.sort(key=lambda s: (s["start_ms"], s["gpu_uuid"]))
        i = 0
        while i < len(samples):
            size = rng.randint(1, 24)
            messages.append(_batch(host, len(messages), samples[i : i + size]))
            i += size
    if rng.random() < 0.25:  # a replay of a run of messages
        k = rng.randrange(len(messages))
        messages += messages[k : k + rng.randint(1, 5)]
    if rng.random() < 0.15:  # one message twice in a row
        k = rng.randrange(len(messages))
        messages.insert(k, messages[k])
    if rng.random() < 0.15:
        rng.shuffle(messages)
    return messages


def _spike(rng: random.Random, samples: list[GpuSample]) -> None:
    """Now and then add a hostile sample, a reused number or an absurd one."""
    if rng.random() < 0.15:  # a hostile one: time already covered, a new number
        victim = rng.choice(samples)
        samples.append({**victim, "seq": victim["seq"] + 10**6})
    if rng.random() < 0.15:  # a number used before, for later time (a reset agent)
        victim = rng.choice(samples[-3:])  # most often, a later time in the same hour
        later = max(x["end_ms"] for x in samples) + rng.choice((0, 1000))
        length = victim["end_ms"] - victim["start_ms"]
        samples.append({**victim, "start_ms": later, "end_ms": later + length})
    if rng.random() < 0.1:  # outside the bounds: absurd power
        victim = rng.choice(samples)
        samples.append({**victim, "seq": victim["seq"] + 2 * 10**6, "energy_mj": 10**15})
        samples[-1]["jobs"] = []


def _batch(host: str, number: int, samples: list[GpuSample]) -> GpuSampleBatch:
    return {
        "batch_id": f"{host}-{number}",
        "agent_id": host,
        "batch_seq": number,
        "host": host,
        "site": "fra",
        "zone": "DE",
        "source": "nvml",
        "published_at_ms": T0,
        "samples": samples,
    }


def policy_of(rng: random.Random) -> Policy:
    bounds = Bounds(
        max_interval_ms=3 * HOUR_MS,
        max_gpus_per_host=rng.choice((2, 64, 64, 64)),
        max_jobs_per_gpu_hour=rng.choice((3, 32, 32, 32)),
        max_fragments_per_gpu_hour=rng.choice((3, 1024, 1024, 1024)),
    )
    return Policy(retention_ms=rng.choice((72, 72, 72, 3)) * HOUR_MS, bounds=bounds)


def feed(
    states: dict[bytes, HostState],
    messages: list[SampleMessage],
    policy: Policy | None = None,
    touched: dict[bytes, HostState] | None = None,
) -> Outcome:
    return ingest_messages(
        states,
        {} if touched is None else touched,
        messages,
        now_ms=NOW,
        sample_now_ms=NOW,
        policy=policy or Policy(),
    )


def run(
    messages: list[GpuSampleBatch], rng: random.Random, policy: Policy, arrays: bool
) -> tuple[dict[bytes, HostState], Outcome]:
    """Feed the messages in batches of random sizes (a restart through stored slices
    now and then); by arrays where they can, or strictly one sample at a time."""
    states: dict[bytes, HostState] = {}
    out = Outcome()
    i = 0
    while i < len(messages):
        size = rng.randint(1, 12)
        chosen = [SampleMessage(to_block(m), None, 0) for m in messages[i : i + size]]
        i += size
        touched: dict[bytes, HostState] = {}
        if arrays:
            done = ingest_messages(
                states, touched, chosen, now_ms=NOW, sample_now_ms=NOW, policy=policy
            )
            out.applied += done.applied
            out.vectorised += done.vectorised
            out.duplicates += done.duplicates
            out.rejected += done.rejected
        else:
            for message in chosen:
                key = message.header["host"].encode()
                state = states.setdefault(key, HostState(message.header["host"]))
                state.partition, state.last_seen_ms = 0, NOW
                one_by_one(state, message, NOW, policy, out)
        if rng.random() < 0.15:  # restart: every host from its stored slices
            states = {key: _restored(state) for key, state in states.items()}
    return states, out


def _restored(state: HostState) -> HostState:
    hours = {h for gpu in state.gpus.values() for h in gpu.applied}
    slices = [slice_of(state, h) for h in sorted(hours)]
    return pickle.loads(pickle.dumps(host_of([s for s in slices if s is not None])))


def _seqs(applied: SeqSet) -> tuple[set[int], list[tuple[int, int]]]:
    return set(range(applied.lo, applied.upto)) | applied.extra, applied.spans


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= REL * max(abs(a), abs(b))


def assert_same_state(arrays: HostState, one: HostState) -> None:
    assert arrays.gpus.keys() == one.gpus.keys()
    for uuid, gpu in one.gpus.items():
        other = arrays.gpus[uuid]
        assert (other.site, other.zone, other.gpu_model) == (gpu.site, gpu.zone, gpu.gpu_model)
        assert other.watermark_ms == gpu.watermark_ms
        assert other.applied.keys() == gpu.applied.keys()
        for hour, applied in gpu.applied.items():
            assert _seqs(other.applied[hour]) == _seqs(applied), (uuid, hour)
        assert other.hours.keys() == gpu.hours.keys()
        for key, energy in gpu.hours.items():
            got = other.hours[key]
            exact = ("energy_mj", "bins_ms", "prompt_tokens", "generation_tokens", "as_of_ms")
            for name in (*exact, "model"):
                assert getattr(got, name) == getattr(energy, name), (uuid, key, name)
            for name in ("covered_ms", "gpu_ms"):
                assert _close(getattr(got, name), getattr(energy, name)), (uuid, key, name)
            for x, y in zip(got.bins_mj, energy.bins_mj, strict=True):
                assert _close(x, y), (uuid, key, got.bins_mj, energy.bins_mj)
            assert all(type(v) is int for v in got.bins_ms)
            assert type(got.energy_mj) is int and type(got.covered_ms) is float
    assert arrays.keys_by_hour == one.keys_by_hour
    assert arrays.changed_hours == one.changed_hours
    assert {k: v.dirty for k, v in arrays.emitted.items()} == {
        k: v.dirty for k, v in one.emitted.items()
    }


def book_of(rng: random.Random) -> IntensityBook:
    """Average and marginal intensity in 5-, 15-, 30- or 60-minute periods, some missing."""
    book = IntensityBook()
    for signal, variant in (("average", "lifecycle"), ("marginal", "direct")):
        period = rng.choice((5, 15, 30, 60)) * 60_000
        for start in range(T0, T0 + 12 * HOUR_MS, period):
            if rng.random() < 0.1:
                continue
            event: GridIntensityEvent = {
                "event_id": f"{signal}-{start}",
                "zone": "DE",
                "period_start_ms": start,
                "period_end_ms": start + period,
                "intensity_g_per_kwh": rng.uniform(20, 700),
                "signal": signal,  # type: ignore[typeddict-item]
                "variant": variant,  # type: ignore[typeddict-item]
                "provider": "test",
                "kind": "measured",
                "estimation_method": None,
                "revision": 0,
                "published_at_ms": start,
            }
            book.apply(event)
    return book


def assert_same_records(arrays: HostState, one: HostState, book: IntensityBook) -> None:
    factors = Factors()
    for uuid, gpu in one.gpus.items():
        for key in gpu.hours:
            ours = emission_record(
                uuid, arrays.gpus[uuid], key, book, factors, status="final", revision=0, now_ms=0
            )
            theirs = emission_record(
                uuid, gpu, key, book, factors, status="final", revision=0, now_ms=0
            )
            for signal in ("average", "marginal"):
                a, b = ours.pop(signal), theirs.pop(signal)  # type: ignore[misc]
                assert (a is None) == (b is None)
                if a is not None and b is not None:
                    assert _close(a["emissions_g"], b["emissions_g"])
                    assert a["intensity_event_ids"] == b["intensity_event_ids"]
            for name in ("water_l", "embodied_g", "coverage", "facility_energy_kwh"):
                assert _close(ours.pop(name), theirs.pop(name))  # type: ignore[misc]
            assert ours == theirs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_the_arrays_equal_the_per_sample_path_on_any_stream(seed: int) -> None:
    rng = random.Random(seed)
    messages = stream(rng)
    policy = policy_of(rng)
    batches = rng.randrange(2**32)
    arrays, by_arrays = run(messages, random.Random(batches), policy, arrays=True)
    one, by_one = run(messages, random.Random(batches), policy, arrays=False)
    assert by_arrays.applied == by_one.applied
    assert by_arrays.duplicates == by_one.duplicates
    assert sorted((s["gpu_uuid"], s["seq"], r.code) for _, s, r in by_arrays.rejected) == sorted(
        (s["gpu_uuid"], s["seq"], r.code) for _, s, r in by_one.rejected
    )
    assert arrays.keys() == one.keys()
    book = book_of(rng)
    for key, state in one.items():
        assert_same_state(arrays[key], state)
        assert_same_records(arrays[key], state, book)


def test_a_clean_stream_goes_by_arrays_and_a_replay_one_by_one() -> None:
    """The equality above is not won by never taking the array path."""
    rng = random.Random(7)
    samples = []
    t = T0 + 10 * 60_000
    for seq in range(300):  # two GPUs, 60 s samples, across an hour boundary
        for gpu in ("h-gpu0", "h-gpu1"):
            samples.append(_sample(rng, gpu, seq, t, t + 60_000))
        t += 60_000
    messages = [_batch("h", i, samples[i * 60 : (i + 1) * 60]) for i in range(10)]
    policy = Policy()
    states: dict[bytes, HostState] = {}
    first = [SampleMessage(to_block(m), None, 0) for m in messages[:5]]
    done = feed(states, first)
    assert done.vectorised == done.applied == 300
    state = states[b"h"]
    assert ingest_blocks(state, first[-1:], NOW, policy) is None  # a replay: one by one
    again = feed(states, first[-1:])
    assert (again.applied, again.duplicates, again.vectorised) == (0, 60, 0)
    rest = [SampleMessage(to_block(m), None, 0) for m in messages[5:]]
    assert feed(states, rest).vectorised == 300


@pytest.mark.parametrize("change", ["future", "overlap", "absurd"])
def test_a_sample_the_rules_refuse_sends_its_host_one_by_one(change: str) -> None:
    rng = random.Random(3)
    samples = [
        _sample(rng, "h-gpu0", seq, T0 + seq * 1000, T0 + seq * 1000 + 1000) for seq in range(8)
    ]
    if change == "future":
        samples[3] = {**samples[3], "start_ms": NOW + HOUR_MS, "end_ms": NOW + HOUR_MS + 1000}
    elif change == "overlap":
        samples[3] = {**samples[2], "seq": 99}
    else:
        samples[3] = {**samples[3], "energy_mj": 10**14, "jobs": []}
    message = SampleMessage(to_block(_batch("h", 0, samples)), None, 0)
    state = HostState("h")
    assert ingest_blocks(state, [message], NOW, Policy()) is None
    assert state == HostState("h")  # nothing written before the answer
    out = feed({}, [message])
    assert out.applied == 7 and len(out.rejected) == 1
    assert from_block(message.block)["samples"][3]["seq"] == out.rejected[0][1]["seq"]  # type: ignore[arg-type]


def test_a_batch_that_does_not_pack_goes_one_by_one() -> None:
    rng = random.Random(5)
    samples = [
        _sample(rng, "h-gpu0", seq, T0 + seq * 1000, T0 + seq * 1000 + 1000) for seq in range(4)
    ]
    samples[1] = {**samples[1], "gpu_index": -1}  # no u16: refused, the rest applied
    batch = _batch("h", 0, samples)
    out = feed({}, [SampleMessage(None, batch, 0)])
    assert out.applied == 3 and [r.code for _, _, r in out.rejected] == ["out_of_range"]


def test_a_number_applied_before_counts_once_even_for_other_time() -> None:
    """An agent that reset its numbers: seq 3 again, later in the same hour, is a
    duplicate for the per-sample rules (the hour holds seq 3); the arrays agree."""
    rng = random.Random(9)
    samples = [_sample(rng, "h-gpu0", n, T0 + n * 1000, T0 + n * 1000 + 1000) for n in range(8)]
    states: dict[bytes, HostState] = {}
    assert feed(states, [SampleMessage(to_block(_batch("h", 0, samples)), None, 0)]).vectorised == 8
    again = {**samples[3], "start_ms": T0 + 60_000, "end_ms": T0 + 61_000}
    out = feed(states, [SampleMessage(to_block(_batch("h", 1, [again])), None, 0)])
    assert (out.applied, out.duplicates) == (0, 1)


def test_a_batch_is_applied_in_parts_bounded_by_samples() -> None:
    rng = random.Random(11)
    sizes = [3, 5, 2, 9, 1, 1]
    messages = []
    for n, size in enumerate(sizes):
        samples = [
            _sample(rng, "h-gpu0", k, T0 + k * 1000, T0 + k * 1000 + 1000) for k in range(size)
        ]
        messages.append(SampleMessage(to_block(_batch("h", n, samples)), None, 0))
    parts = list(parts_of(messages, 8))
    assert [[m.size() for m in part] for part in parts] == [[3, 5], [2], [9], [1, 1]]
    assert [m for part in parts for m in part] == messages  # in order, none lost


def test_blocks_without_samples_apply_nothing_beside_others() -> None:
    rng = random.Random(13)
    samples = [_sample(rng, "h-gpu0", n, T0 + n * 1000, T0 + n * 1000 + 1000) for n in range(3)]
    empty = SampleMessage(to_block(_batch("e", 0, [])), None, 0)
    assert feed({}, [empty]).applied == 0  # alone
    full = SampleMessage(to_block(_batch("h", 1, samples)), None, 0)
    states: dict[bytes, HostState] = {}
    out = feed(states, [empty, full, empty])
    assert (out.applied, out.vectorised) == (3, 3)
    assert states[b"e"].gpus == {}
