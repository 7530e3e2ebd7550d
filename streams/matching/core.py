"""Temporal matching, the pure core: exact hourly emissions from samples and intensity.

No I/O and no Kafka: the faust processors (``streams.matching.worker``) feed it and
publish what it returns; the tests drive it directly.

**Energy.** A sample's energy E over [start, end) is spread uniformly in time (the sample
is all we know), so the part in any sub-interval is E x overlap / duration. Each job
share is split at every 5-minute boundary ("bin") and kept per (GPU, job, hour) as 12 bin
energies. Intensity periods of every provider start and end on 5-minute boundaries (EM
60 min, NESO 30 min, WattTime 5 min), so intensity is constant inside a bin and

    emissions = sum over bins of energy_in_bin x intensity_of_bin

is the exact integral of power x intensity, whenever the intensity arrives (late
binding). Periods that are not 5-minute aligned are refused (dead letter).

**Intensity.** For every (zone, signal, variant, bin) the covering event with the
greatest (revision, published_at_ms, event_id) wins. That is a max, so arrival order
does not matter, and a revision (a higher number) replaces what it revises.

**Idempotence.** Every (GPU, hour) keeps the set of sample sequence numbers applied to
it (a contiguous run plus stragglers) in the same state value as its energy, so a
replayed or duplicated batch changes nothing, even when one hour of a sample that
straddles two was stored and the other was not.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from schemas.records import (
    EmissionHour,
    EmissionStatus,
    GpuSample,
    Signal,
    SignalEmissions,
    Variant,
)
from schemas.units import HOUR_MS, largest_remainder

# The intensity book lives in streams.matching.prices; its names are imported here too,
# so a state pickled as streams.matching.core.Price (GlobalTable changelogs written before
# the move) still loads, and older imports keep working.
from streams.matching.prices import (
    BIN_MS,
    BINS,
    SIGNAL_VARIANTS,
    AbsurdIntensityError,
    BookKey,
    IntensityBook,
    Price,
    PriceSource,
    UnalignedPeriodError,
    check_event,
    intensity_version,
    merge_event,
    price_of,
)

__all__ = [
    "BINS",
    "BIN_MS",
    "MJ_PER_KWH",
    "SIGNAL_VARIANTS",
    "AbsurdIntensityError",
    "BookKey",
    "IntensityBook",
    "Price",
    "PriceSource",
    "UnalignedPeriodError",
    "check_event",
    "intensity_version",
    "merge_event",
    "price_of",
]

MJ_PER_KWH = 3_600_000_000


# ---------------------------------------------------------------- energy


@dataclass
class SeqSet:
    """Applied sequence numbers: the run ``[lo, upto)``, plus ``extra`` outside it; and the
    time those samples covered in the hour, as merged ``[a, b)`` spans, so a sample that
    overlaps one applied before under another number is refused, not counted twice."""

    upto: int = 0
    extra: set[int] = field(default_factory=set)
    lo: int = 0
    spans: list[tuple[int, int]] = field(default_factory=list)

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update({"spans": [], **state})  # slices stored before spans existed

    def overlaps(self, a: int, b: int) -> bool:
        """Whether [a, b) shares time with a span already covered."""
        i = bisect.bisect_left(self.spans, b, key=_span_start)  # spans starting before b
        return i > 0 and self.spans[i - 1][1] > a

    def cover(self, a: int, b: int) -> None:
        spans = self.spans
        i = bisect.bisect_left(spans, a, key=_span_start)
        if i > 0 and spans[i - 1][1] >= a:  # touches the one before: merge into it
            i -= 1
            a = spans[i][0]
            b = max(b, spans[i][1])
        j = i
        while j < len(spans) and spans[j][0] <= b:
            b = max(b, spans[j][1])
            j += 1
        spans[i:j] = [(a, b)]

    def __contains__(self, seq: int) -> bool:
        return self.lo <= seq < self.upto or seq in self.extra

    def add(self, seq: int) -> None:
        if self.lo == self.upto and not self.extra:
            self.lo, self.upto = seq, seq + 1  # the first one starts the run
            return
        if seq == self.upto:
            self.upto += 1
        elif seq == self.lo - 1:
            self.lo -= 1
        else:
            self.extra.add(seq)
        self._absorb()

    def extend(self, first: int, last: int) -> None:
        """Add ``first..last``, which continue the run at its end (or start an empty
        set), as :meth:`add` one by one would."""
        if self.lo == self.upto and not self.extra:
            self.lo = first
        self.upto = last + 1
        self._absorb()

    def _absorb(self) -> None:
        """Stragglers that now touch the run join it."""
        while self.upto in self.extra:
            self.extra.discard(self.upto)
            self.upto += 1
        while self.lo - 1 in self.extra:
            self.extra.discard(self.lo - 1)
            self.lo -= 1


def _span_start(span: tuple[int, int]) -> int:
    return span[0]


def overlap_of(state: GpuState, sample: GpuSample) -> int | None:
    """The first hour in which ``sample`` overlaps time that samples with other sequence
    numbers already covered (None: it does not; a re-delivery of an applied sample is a
    duplicate, not an overlap)."""
    seq = sample["seq"]
    for hour, a, b in split_hours(sample["start_ms"], sample["end_ms"]):
        applied = state.applied.get(hour)
        if applied is not None and seq not in applied and applied.overlaps(a, b):
            return hour
    return None


class HourKey(NamedTuple):
    """(hour, job, tenant): a tuple, so hashing and comparing it run in C."""

    hour_start_ms: int
    job_id: str
    tenant: str


@dataclass
class HourEnergy:
    """One (GPU, job) in one hour: energy per 5-minute bin and what goes with it."""

    bins_mj: list[float] = field(default_factory=lambda: [0.0] * BINS)
    bins_ms: list[int] = field(default_factory=lambda: [0] * BINS)  # sample time per bin
    energy_mj: int = 0  # integer mJ, split between hours by largest remainder per sample
    covered_ms: float = 0.0  # sample time in the hour
    gpu_ms: float = 0.0  # sample time x the job's share (for embodied emissions)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    as_of_ms: int = 0  # end of the newest sample included
    model: str | None = None


@dataclass
class GpuState:
    """Everything one GPU contributed: hours by (hour, job), and per hour the sequences
    applied to it (so an hour, stored alone, knows what it holds)."""

    host: str
    site: str
    zone: str
    gpu_model: str
    applied: dict[int, SeqSet] = field(default_factory=dict)  # by hour_start_ms
    hours: dict[HourKey, HourEnergy] = field(default_factory=dict)
    watermark_ms: int = 0  # newest sample end seen (event time)


def split_hours(start: int, end: int) -> list[tuple[int, int, int]]:
    """[start, end) cut at hour boundaries: (hour_start, piece_start, piece_end)."""
    pieces = []
    t = start
    while t < end:
        hour = t - t % HOUR_MS
        stop = min(end, hour + HOUR_MS)
        pieces.append((hour, t, stop))
        t = stop
    return pieces


def apply_sample(state: GpuState, sample: GpuSample) -> bool:
    """Add one sample's job shares to the GPU's hours; False when it was applied before.

    Each hour the sample touches checks and records the sequence number itself, so an
    hour holds a piece of the sample exactly once, whatever was stored or lost beside it.
    """
    seq = sample["seq"]
    start, end = sample["start_ms"], sample["end_ms"]
    duration = end - start
    if duration <= 0:
        return False
    pieces = split_hours(start, end)
    fresh = []
    for i, (hour, _, _) in enumerate(pieces):
        applied = state.applied.get(hour)
        if applied is None:
            applied = state.applied[hour] = SeqSet()
        if seq not in applied:
            applied.add(seq)
            applied.cover(pieces[i][1], pieces[i][2])
            fresh.append(i)
    if not fresh:
        return False
    state.watermark_ms = max(state.watermark_ms, end)
    whole = len(pieces) == 1  # the common case: the sample lies within one hour
    for job in sample["jobs"]:
        energy = job["energy_mj"]
        if whole or not energy:
            ints = [energy] * len(pieces) if whole else [0] * len(pieces)
        else:
            ints = largest_remainder(energy, [b - a for _, a, b in pieces])
        for i in fresh:
            hour, a, b = pieces[i]
            key = HourKey(hour, job["job_id"], job["tenant"])
            hour_energy = state.hours.get(key)
            if hour_energy is None:
                hour_energy = state.hours[key] = HourEnergy()
            _add_piece(hour_energy, hour, a, b, energy / duration)
            hour_energy.energy_mj += ints[i]
            hour_energy.covered_ms += b - a
            hour_energy.gpu_ms += (b - a) * job["share"]
            hour_energy.as_of_ms = max(hour_energy.as_of_ms, b)
            hour_energy.model = job["model"] or hour_energy.model
        last = len(pieces) - 1
        if (job["prompt_tokens"] or job["generation_tokens"]) and last in fresh:
            # tokens belong to the hour the sample ends in
            tokens = state.hours[HourKey(pieces[last][0], job["job_id"], job["tenant"])]
            tokens.prompt_tokens += job["prompt_tokens"]
            tokens.generation_tokens += job["generation_tokens"]
    return True


def _add_piece(hour_energy: HourEnergy, hour: int, a: int, b: int, mj_per_ms: float) -> None:
    """Spread ``mj_per_ms`` over [a, b) into the hour's 5-minute bins."""
    t = a
    while t < b:
        slot = (t - hour) // BIN_MS
        stop = min(b, hour + (slot + 1) * BIN_MS)
        hour_energy.bins_mj[slot] += mj_per_ms * (stop - t)
        hour_energy.bins_ms[slot] += stop - t
        t = stop


# ---------------------------------------------------------------- pricing and records


@dataclass(frozen=True)
class Factors:
    """Site and hardware factors: PUE and WUE per site, embodied gCO2e per GPU-hour."""

    pue: Mapping[str, float] = field(default_factory=dict)
    wue_l_per_kwh: Mapping[str, float] = field(default_factory=dict)
    embodied_g_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)  # by model
    default_pue: float = 1.2
    default_wue_l_per_kwh: float = 0.5
    default_embodied_g_per_gpu_hour: float = 0.0
    average_variant: Variant = "lifecycle"

    def embodied(self, gpu_model: str) -> float:
        """The longest configured model name contained in ``gpu_model`` wins."""
        matches = [name for name in self.embodied_g_per_gpu_hour if name in gpu_model]
        if not matches:
            return self.default_embodied_g_per_gpu_hour
        return self.embodied_g_per_gpu_hour[max(matches, key=len)]


def price(
    energy: HourEnergy,
    book: PriceSource,
    where: tuple[str, int],
    signal: Signal,
    variant: Variant,
) -> SignalEmissions | None:
    """Emissions of one hour's energy with one signal; None when nothing prices it."""
    zone, hour = where
    bins = book.bins(zone, signal, variant, hour)
    total = sum(energy.bins_mj)
    grams = priced = 0.0
    used: dict[str, Price] = {}
    for mj, ms, p in zip(energy.bins_mj, energy.bins_ms, bins, strict=True):
        if p is None or ms == 0:
            continue
        grams += mj / MJ_PER_KWH * p.value
        priced += mj
        used[p.event_id] = p
    if not used:
        return None
    return {
        "emissions_g": grams,
        "intensity_g_per_kwh": grams / (priced / MJ_PER_KWH) if priced else 0.0,
        "priced_fraction": priced / total if total else 1.0,
        "variant": variant,
        "providers": sorted({p.provider for p in used.values()}),
        "intensity_event_ids": sorted(used),
        "estimated": any(p.estimated for p in used.values()),
    }


def record_id(hour: int, host: str, gpu_uuid: str, job_id: str, tenant: str) -> str:
    digest = hashlib.sha256(f"{hour}\0{host}\0{gpu_uuid}\0{job_id}\0{tenant}".encode())
    return digest.hexdigest()[:32]


def emission_record(
    gpu_uuid: str,
    state: GpuState,
    key: HourKey,
    book: PriceSource,
    factors: Factors,
    *,
    status: EmissionStatus,
    revision: int,
    now_ms: int,
) -> EmissionHour:
    energy = state.hours[key]
    hour = key.hour_start_ms
    kwh = energy.energy_mj / MJ_PER_KWH
    facility = kwh * factors.pue.get(state.site, factors.default_pue)
    return {
        "record_id": record_id(hour, state.host, gpu_uuid, key.job_id, key.tenant),
        "hour_start_ms": hour,
        "host": state.host,
        "site": state.site,
        "zone": state.zone,
        "gpu_uuid": gpu_uuid,
        "gpu_model": state.gpu_model,
        "job_id": key.job_id,
        "tenant": key.tenant,
        "model": energy.model,
        "status": status,
        "revision": revision,
        "energy_mj": energy.energy_mj,
        "energy_kwh": kwh,
        "facility_energy_kwh": facility,
        "water_l": facility * factors.wue_l_per_kwh.get(state.site, factors.default_wue_l_per_kwh),
        "embodied_g": energy.gpu_ms / HOUR_MS * factors.embodied(state.gpu_model),
        "coverage": min(1.0, energy.covered_ms / HOUR_MS),
        "prompt_tokens": energy.prompt_tokens,
        "generation_tokens": energy.generation_tokens,
        "average": price(energy, book, (state.zone, hour), "average", factors.average_variant),
        "marginal": price(energy, book, (state.zone, hour), "marginal", "direct"),
        "computed_at_ms": now_ms,
    }


def fingerprint(record: EmissionHour) -> tuple[object, ...]:
    """What makes two records of the same hour differ (not status, revision or time)."""
    ignored = {"status", "revision", "computed_at_ms"}
    return tuple(
        (k, tuple(v.items()) if isinstance(v, dict) else v)
        for k, v in record.items()
        if k not in ignored
    )
