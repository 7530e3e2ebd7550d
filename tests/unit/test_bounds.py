"""Physical bounds on every input field, overlap detection, and the worst state a host can
build inside them (issue 23's cases, on the pure core)."""

from __future__ import annotations

import copy
import pickle

from hypothesis import given
from hypothesis import strategies as st

from schemas.bounds import (
    MAX_DEAD_VALUE_BYTES,
    Bounds,
    bounded_letter_fields,
    check_event_fields,
    sample_problem,
)
from schemas.errors import RejectedInputError
from schemas.records import GpuSample, GridIntensityEvent
from schemas.units import HOUR_MS
from streams.matching.admission import check_sample
from streams.matching.core import SeqSet
from streams.matching.lifecycle import HostState, Policy, ingest, slice_of
from streams.settings import WorkerSettings
from tests.examples import EXAMPLES
from tests.unit.test_matching_core import T0, sample

BOUNDS = Bounds()
POLICY = Policy()
NOW = T0 + 2 * HOUR_MS


def code_of(s: GpuSample) -> str | None:
    problem = sample_problem(s, BOUNDS)
    return None if problem is None else problem.code


def mutated(**changes: object) -> GpuSample:
    s = sample("g", 0, T0, T0 + 10_000, [("j", 5_000_000)])  # 500 W for 10 s
    s.update(changes)  # type: ignore[typeddict-item]
    return s


def reason_code(rejection: RejectedInputError | None) -> str | None:
    """The stable code of a rejection (None: the sample is accepted)."""
    return None if rejection is None else rejection.code


def test_a_clean_sample_passes() -> None:
    assert code_of(mutated()) is None


def test_power_is_bounded_by_the_device_table_not_by_the_messages_own_limit() -> None:
    for limit in (0.0, 700.0, 1e5):  # the message's limit does not matter
        huge = mutated(power_limit_w=limit, energy_mj=10**13)
        huge["jobs"][0]["energy_mj"] = 10**13
        assert code_of(huge) == "absurd_power"
    assert code_of(mutated(power_limit_w=float("nan"))) == "out_of_range"
    biggest = mutated(energy_mj=2**63 - 1)
    biggest["jobs"][0]["energy_mj"] = 2**63 - 1
    assert code_of(biggest) == "absurd_power"


def test_the_longest_model_part_wins() -> None:
    assert BOUNDS.power_w("NVIDIA A100-SXM4-80GB") == 400.0  # not the A10's 150 W
    assert BOUNDS.power_w("NVIDIA H100 80GB HBM3 MIG 1g.10gb") == 700.0
    assert BOUNDS.power_w("NVIDIA L40S") == 350.0
    assert BOUNDS.power_w("some future board") == BOUNDS.default_power_w
    a10 = mutated(gpu_model="NVIDIA A10")  # 500 W on a 150 W board
    assert code_of(a10) == "absurd_power"


def test_ranges_of_every_field() -> None:
    cases = {
        "out_of_range": [mutated(seq=-5), mutated(gpu_index=-1), mutated(utilization_pct=101.0)],
        "time_out_of_range": [mutated(start_ms=-(2**62)), mutated(end_ms=2**62)],
        "interval_too_long": [mutated(start_ms=T0 - 5 * 365 * 24 * HOUR_MS)],
        "empty_interval": [mutated(end_ms=T0)],
    }
    infinite_share = mutated()
    infinite_share["jobs"][0]["share"] = float("inf")
    cases["out_of_range"].append(infinite_share)
    negative_tokens = mutated()
    negative_tokens["jobs"][0]["prompt_tokens"] = -1
    cases["out_of_range"].append(negative_tokens)
    for code, samples in cases.items():
        for s in samples:
            assert code_of(s) == code, s


def test_every_string_and_array_is_bounded() -> None:
    long_job = mutated()
    long_job["jobs"][0]["job_id"] = "x" * 2_000_000
    assert code_of(long_job) == "field_too_long"
    assert code_of(mutated(gpu_uuid="G" * 129)) == "field_too_long"
    many = mutated()
    many["jobs"] = [dict(many["jobs"][0], energy_mj=0, share=0.0) for _ in range(65)]  # type: ignore[misc]
    assert code_of(many) == "too_many_jobs"


def test_intensity_event_fields() -> None:
    event: GridIntensityEvent = copy.deepcopy(EXAMPLES["grid_intensity"])  # type: ignore[assignment]
    check_event_fields(event, BOUNDS)
    for field, value in (("period_start_ms", 0), ("revision", -1), ("zone", "Z" * 500)):
        bad = dict(event, **{field: value})
        try:
            check_event_fields(bad, BOUNDS)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"{field}={value!r} passed")


def test_a_sample_overlapping_an_applied_one_under_a_new_seq_is_refused() -> None:
    state = HostState("h", partition=0)
    first = sample("g", 0, T0, T0 + 10_000, [("j", 1000)])
    assert check_sample(first, state, NOW, POLICY) is None
    assert ingest(state, "DE", "fra", first)
    overlapping = sample("g", 1, T0 + 5_000, T0 + 15_000, [("j", 1000)])
    assert reason_code(check_sample(overlapping, state, NOW, POLICY)) == "overlapping_sample"
    again = sample("g", 0, T0, T0 + 10_000, [("j", 1000)])  # a re-delivery: a duplicate
    assert check_sample(again, state, NOW, POLICY) is None
    assert not ingest(state, "DE", "fra", again)
    following = sample("g", 1, T0 + 10_000, T0 + 20_000, [("j", 1000)])
    assert check_sample(following, state, NOW, POLICY) is None
    assert ingest(state, "DE", "fra", following)
    earlier = sample("g", 2, T0 - 10_000, T0, [("j", 1000)])  # before, touching: fine
    assert check_sample(earlier, state, NOW, POLICY) is None
    across = sample("g", 3, T0 - 60_000, T0 + 1, [("j", 1000)])  # crosses into the hour
    assert reason_code(check_sample(across, state, NOW, POLICY)) == "overlapping_sample"


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 30)), max_size=40))
def test_seqset_spans_agree_with_a_brute_force_cover(intervals: list[tuple[int, int]]) -> None:
    spans = SeqSet()
    covered: set[int] = set()
    for a, length in intervals:
        b = a + length
        assert spans.overlaps(a, b) == bool(covered & set(range(a, b)))
        spans.cover(a, b)
        covered |= set(range(a, b))
        assert {t for x, y in spans.spans for t in range(x, y)} == covered
        assert all(y < x2 for (_, y), (x2, _) in zip(spans.spans, spans.spans[1:], strict=False))


def test_a_slice_stored_before_spans_existed_loads_with_none() -> None:
    old = SeqSet(upto=3)
    del old.__dict__["spans"]
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.spans == [] and 2 in loaded


def test_a_host_cannot_grow_past_its_gpu_and_job_bounds() -> None:
    small = Policy(bounds=Bounds(max_gpus_per_host=2, max_jobs_per_gpu_hour=3))
    state = HostState("h", partition=0)
    for gpu in ("a", "b"):
        assert ingest(state, "DE", "fra", sample(gpu, 0, T0, T0 + 1000, [("j", 1)]))
    third = sample("c", 0, T0, T0 + 1000, [("j", 1)])
    assert reason_code(check_sample(third, state, NOW, small)) == "too_many_gpus"
    more_jobs = sample("a", 1, T0 + 1000, T0 + 2000, [("j", 1), ("k", 1), ("l", 1), ("m", 1)])
    assert reason_code(check_sample(more_jobs, state, NOW, small)) == "too_many_jobs_in_hour"
    fits = sample("a", 1, T0 + 1000, T0 + 2000, [("j", 1), ("k", 1), ("l", 1)])
    assert check_sample(fits, state, NOW, small) is None


def test_the_worst_slice_the_bounds_allow_fits_one_produce_request() -> None:
    """Every GPU of a host at its bounds, every job label at its longest, the hour as
    fragmented as allowed: the slice is still under the worker's producer request size."""
    bounds = BOUNDS
    state = HostState("h" * bounds.max_text, partition=0)
    label = "x" * bounds.max_text
    seq = 0
    for g in range(bounds.max_gpus_per_host):
        uuid = f"GPU-{g:04d}".ljust(bounds.max_text, "-")
        jobs = bounds.max_jobs_per_gpu_hour
        for j in range(bounds.max_fragments_per_gpu_hour):
            start = T0 + j * 2000  # disjoint: one span each, seqs far apart
            s = sample(uuid, seq, start, start + 1000, [(f"{label[:-6]}{j % jobs:06d}", 1)])
            s["gpu_model"] = label
            s["jobs"][0]["tenant"] = label
            s["jobs"][0]["model"] = label
            seq += 2
            if check_sample(s, state, NOW, POLICY) is not None:
                break
            ingest(state, "DE", "fra", s)
    size = len(pickle.dumps(slice_of(state, T0), protocol=pickle.HIGHEST_PROTOCOL))
    assert size < WorkerSettings().producer_max_request_bytes, size


def test_dead_letters_are_cut_to_fit_a_request() -> None:
    reason, key, value = bounded_letter_fields("r" * 10_000, b"k" * 5000, b"v" * 5_000_000)
    assert len(value) == MAX_DEAD_VALUE_BYTES and len(key or b"") == 1024
    assert len(reason) <= 2000
    assert bounded_letter_fields("ok", None, None) == ("ok", None, b"")
