"""Whether one sample may be applied to its host's state: its bounds, its time against the
clock and the host's watermark, and what it would add to the state (overlap with applied
samples, GPUs, fragments and jobs per hour beyond the bounds). No I/O; the answer is a
:class:`RejectedInputError` whose code becomes the sample's dead letter, or None."""

from __future__ import annotations

from schemas.bounds import Bounds, sample_problem
from schemas.errors import RejectedInputError
from schemas.records import GpuSample
from schemas.units import HOUR_MS
from streams.matching.core import overlap_of, split_hours
from streams.matching.lifecycle import HostState, Policy


def check_sample(
    sample: GpuSample,
    state: HostState,
    now_ms: int,
    policy: Policy,
    watermark_ms: int | None = None,
) -> RejectedInputError | None:
    """Why a sample must not be applied (its dead letter's code and reason), or None.

    ``watermark_ms`` is the host's watermark when the caller already has it (a batch
    keeps it up to date instead of recomputing it per sample). Checks run in order; only a
    failed one builds its message.
    """
    problem = sample_problem(sample, policy.bounds)
    if problem is not None:
        return problem
    watermark = state.watermark_ms if watermark_ms is None and state.gpus else watermark_ms
    reason = _time_problem(sample, bool(state.gpus), watermark or 0, now_ms, policy)
    if reason is None:
        reason = _state_problem(sample, state, policy.bounds)
    return reason


def _state_problem(
    sample: GpuSample, state: HostState, bounds: Bounds
) -> RejectedInputError | None:
    """Overlap with applied samples, and what the sample would add to the host's state
    beyond its bounds (so no slice can outgrow a produce request)."""
    uuid = sample["gpu_uuid"]
    gpu = state.gpus.get(uuid)
    if gpu is None:
        if len(state.gpus) >= bounds.max_gpus_per_host:
            return RejectedInputError(
                "too_many_gpus", f"the host has {len(state.gpus)} GPUs already"
            )
        return None
    hour = overlap_of(gpu, sample)
    if hour is not None:
        return RejectedInputError(
            "overlapping_sample",
            f"seq {sample['seq']} covers time in the hour at {hour} "
            "that samples with other sequence numbers already covered",
        )
    for hour, _, _ in split_hours(sample["start_ms"], sample["end_ms"]):
        applied = gpu.applied.get(hour)
        if applied is None:
            continue
        if max(len(applied.spans), len(applied.extra)) >= bounds.max_fragments_per_gpu_hour:
            return RejectedInputError(
                "too_fragmented", f"the GPU's hour at {hour} holds too many disjoint samples"
            )
        keys = state.keys_by_hour.get(hour, {}).get(uuid, {})
        new = {(j["job_id"], j["tenant"]) for j in sample["jobs"]} - {
            (k.job_id, k.tenant) for k in keys
        }
        if len(keys) + len(new) > bounds.max_jobs_per_gpu_hour:
            return RejectedInputError(
                "too_many_jobs_in_hour",
                f"the GPU's hour at {hour} would hold "
                f"{len(keys) + len(new)} jobs (at most {bounds.max_jobs_per_gpu_hour})",
            )
    return None


def _time_problem(
    sample: GpuSample, known: bool, watermark_ms: int, now_ms: int, policy: Policy
) -> RejectedInputError | None:
    age = now_ms - sample["end_ms"]
    if -age > policy.future_ms:
        return RejectedInputError("future_timestamp", f"ends {-age / 60_000:.0f} min after now")
    if policy.max_age_ms is not None and age > policy.max_age_ms:
        return RejectedInputError("too_old", f"ended {age / HOUR_MS:.1f} h ago")
    if known and sample["start_ms"] < watermark_ms - policy.retention_ms:
        return RejectedInputError(
            "too_late", "its hour was closed and forgotten (beyond retention)"
        )
    return None
