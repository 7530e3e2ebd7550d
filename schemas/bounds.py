"""What a physically possible input looks like: bounds checked at every boundary (pure).

The Avro schema says a field is a ``long``; these say which longs a GPU, a grid or an
agent can actually produce. The worker refuses what fails them (a dead letter with the
reason code returned here) before anything is priced; the sink stores what fails them in
``gpu_samples_rejected``, never in ``gpu_samples``.

Power is bounded by a **device table** (the board power a model can draw at most), never
by the message's own ``power_limit_w``, which a broken or hostile agent writes too. Sizes
of every string and array are bounded, so no record or state the worker writes can grow
past the producer's request size because of one message's labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.errors import RejectedInputError
from schemas.records import GpuSample, GpuSampleBatch, GridIntensityEvent, SampleHeader

# Maximum board power by model name part, watts (vendor specifications, the highest SKU
# of each name). Longest part first wins, so "A100" is not read as "A10".
DEVICE_POWER_W: dict[str, float] = {
    "GB300": 1400.0,
    "GB200": 1200.0,
    "B300": 1100.0,
    "B200": 1000.0,
    "B100": 700.0,
    "GH200": 1000.0,
    "H200": 700.0,
    "H100": 700.0,
    "H800": 700.0,
    "H20": 500.0,
    "A100": 400.0,
    "A800": 400.0,
    "A40": 300.0,
    "A30": 165.0,
    "A10": 150.0,
    "L40S": 350.0,
    "L40": 300.0,
    "L4": 72.0,
    "V100": 350.0,
    "T4": 70.0,
    "MI355X": 1400.0,
    "MI325X": 1000.0,
    "MI300X": 750.0,
    "MI300A": 760.0,
    "MI250X": 560.0,
    "MI250": 560.0,
    "MI210": 300.0,
    "RTX 6000": 300.0,
    "RTX 5090": 575.0,
    "RTX 4090": 450.0,
}

MIN_TIME_MS = 946_684_800_000  # 2000-01-01: no sample or intensity of ours is older
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01
MAX_COUNT = 2**53  # counters (seq, tokens, bytes) stay exact in a float and in JSON


class BoundsError(RejectedInputError):
    """An input outside the physical bounds; ``code`` is the dead letter's reason code."""


@dataclass(frozen=True)
class Bounds:
    max_text: int = 128  # characters of any id or label
    max_samples: int = 20_000  # per batch
    max_jobs: int = 64  # per sample
    max_interval_ms: int = 3_600_000  # a sample longer than this is not one reading
    min_interval_ms: int = 1
    absurd_factor: float = 2.0  # x the device's maximum board power
    default_power_w: float = 1000.0  # a model not in the table
    device_power_w: Mapping[str, float] = field(default_factory=lambda: dict(DEVICE_POWER_W))
    max_temperature_c: float = 200.0
    max_memory_bytes: int = 2**44  # 16 TiB
    max_gpu_index: int = 4096
    # what one host may hold per hour, so its state slice stays under the producer's
    # request size whatever its samples say (tests/unit/test_bounds.py builds the worst)
    max_gpus_per_host: int = 64
    max_jobs_per_gpu_hour: int = 32
    max_fragments_per_gpu_hour: int = 1024  # disjoint spans, or out-of-order seqs
    _power_by_model: dict[str, float] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def power_w(self, gpu_model: str) -> float:
        """The most a ``gpu_model`` can draw, from the table (longest matching part).
        Remembered per model name (a fleet has few; at most 4,096 are kept)."""
        known = self._power_by_model.get(gpu_model)
        if known is not None:
            return known
        name = gpu_model.upper()
        best = ""
        for part in self.device_power_w:
            if len(part) > len(best) and part.upper() in name:
                best = part
        watts = self.device_power_w[best] if best else self.default_power_w
        if len(self._power_by_model) >= 4096:  # hostile names: a bounded cache, not a leak
            self._power_by_model.clear()
        self._power_by_model[gpu_model] = watts
        return watts


def _text(value: object, name: str, bounds: Bounds) -> None:
    if isinstance(value, str) and len(value) > bounds.max_text:
        raise BoundsError(
            "field_too_long", f"{name} has {len(value)} characters (at most {bounds.max_text})"
        )


def _count(value: int, name: str, upper: int = MAX_COUNT) -> None:
    if not 0 <= value < upper:
        raise BoundsError("out_of_range", f"{name} {value} is outside [0, {upper})")


def _time(value: int, name: str) -> None:
    if not MIN_TIME_MS <= value <= MAX_TIME_MS:
        raise BoundsError("time_out_of_range", f"{name} {value} is not between 2000 and 2100")


def _finite(value: float, name: str, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise BoundsError("out_of_range", f"{name} {value} is outside [{low}, {high}]")


def check_batch_header(batch: GpuSampleBatch, bounds: Bounds) -> None:
    """The batch's own fields; a failure refuses the whole batch."""
    check_block_header(batch, len(batch["samples"]), bounds)


def check_block_header(header: SampleHeader, samples: int, bounds: Bounds) -> None:
    """The header fields of a batch or a block of ``samples`` samples (v1 and v2 share
    them); a failure refuses all of its samples."""
    for name in ("batch_id", "agent_id", "host", "site", "zone"):
        _text(header[name], name, bounds)
    _count(header["batch_seq"], "batch_seq")
    _time(header["published_at_ms"], "published_at_ms")
    if samples > bounds.max_samples:
        raise BoundsError(
            "too_many_samples",
            f"{samples} samples in one batch (at most {bounds.max_samples})",
        )


def check_sample_fields(s: GpuSample, bounds: Bounds) -> None:
    """One sample, from physics: sizes, ranges, interval and power against the device table
    (the sample's own ``power_limit_w`` is not trusted)."""
    _text(s["gpu_uuid"], "gpu_uuid", bounds)
    _text(s["gpu_model"], "gpu_model", bounds)
    _text(s.get("mig_instance"), "mig_instance", bounds)
    _count(s["seq"], "seq")
    _count(s["gpu_index"], "gpu_index", bounds.max_gpu_index)
    _count(s["memory_used_bytes"], "memory_used_bytes", bounds.max_memory_bytes)
    start, end = s["start_ms"], s["end_ms"]
    _time(start, "start_ms")
    _time(end, "end_ms")
    length = end - start
    if length < bounds.min_interval_ms:
        raise BoundsError("empty_interval", f"end {end} is not after start {start}")
    if length > bounds.max_interval_ms:
        raise BoundsError(
            "interval_too_long",
            f"a sample of {length / 3.6e6:.2f} h (at most {bounds.max_interval_ms / 3.6e6:g} h)",
        )
    _finite(s["power_w"], "power_w", 0.0, 1e6)
    _finite(s["power_limit_w"], "power_limit_w", 0.0, 1e6)
    _finite(s["utilization_pct"], "utilization_pct", 0.0, 100.0)
    _finite(s["temperature_c"], "temperature_c", -100.0, bounds.max_temperature_c)
    energy = s["energy_mj"]
    if energy < 0:
        raise BoundsError("negative_energy", f"{energy} mJ")
    model = s["gpu_model"]
    most_w = bounds.power_w(model)
    watts = energy / length  # mJ per ms = W
    if watts > bounds.absurd_factor * most_w:
        raise BoundsError(
            "absurd_power",
            f"{watts:.0f} W from a {model!r}, whose board draws at most {most_w:.0f} W",
        )
    jobs = s["jobs"]
    if len(jobs) > bounds.max_jobs:
        raise BoundsError(
            "too_many_jobs", f"{len(jobs)} jobs in one sample (at most {bounds.max_jobs})"
        )
    total_share = 0.0
    total_energy = 0
    for job in jobs:
        _text(job["job_id"], "job_id", bounds)
        _text(job["tenant"], "tenant", bounds)
        _text(job.get("model"), "model", bounds)
        share = job["share"]
        _finite(share, "share", 0.0, 1.0)
        total_share += share
        if job["energy_mj"] < 0:
            raise BoundsError("negative_energy", f"job energy {job['energy_mj']} mJ")
        total_energy += job["energy_mj"]
        _count(job.get("prompt_tokens", 0), "prompt_tokens")
        _count(job.get("generation_tokens", 0), "generation_tokens")
    if total_share > 1.0 + 1e-6:
        raise BoundsError("inconsistent_jobs", f"job shares sum to {total_share} (> 1)")
    if total_energy != energy:
        raise BoundsError("inconsistent_jobs", "job shares do not sum to the sample's energy")


def sample_problem(sample: GpuSample, bounds: Bounds) -> BoundsError | None:
    """Why a sample is outside the bounds, or None."""
    try:
        check_sample_fields(sample, bounds)
    except BoundsError as exc:
        return exc
    return None


def check_event_fields(event: GridIntensityEvent, bounds: Bounds) -> None:
    """An intensity event's sizes and ranges (its value is checked by the worker's core)."""
    for text, name in (
        (event["event_id"], "event_id"),
        (event["zone"], "zone"),
        (event["provider"], "provider"),
        (event.get("estimation_method"), "estimation_method"),
    ):
        _text(text, name, bounds)
    _time(event["period_start_ms"], "period_start_ms")
    _time(event["period_end_ms"], "period_end_ms")
    _time(event["published_at_ms"], "published_at_ms")
    _count(event["revision"], "revision", 2**31)


# a dead letter carries the refused bytes: at most this many, so it always fits a request
MAX_DEAD_VALUE_BYTES = 256 * 1024
MAX_DEAD_KEY_BYTES = 1024
MAX_REASON_CHARS = 2000


def bounded_letter_fields(
    reason: str, key: bytes | None, value: bytes | None
) -> tuple[str, bytes | None, bytes]:
    """``reason``, ``key`` and ``value`` cut to sizes that always fit one produce request;
    the reason says when the value was cut, and how long it was."""
    value = value or b""
    if len(value) > MAX_DEAD_VALUE_BYTES:
        reason = f"{reason} [value cut from {len(value)} bytes to {MAX_DEAD_VALUE_BYTES}]"
        value = value[:MAX_DEAD_VALUE_BYTES]
    if key is not None and len(key) > MAX_DEAD_KEY_BYTES:
        key = key[:MAX_DEAD_KEY_BYTES]
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 12] + " [cut]"
    return reason, key, value
