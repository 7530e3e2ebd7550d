"""Hour lifecycle and sample checks for one host's state (pure; the worker calls it).

A host's state holds its GPUs (``core.GpuState``) and what was emitted for each
(GPU, job, hour). :func:`tick` decides, from event time and an injectable clock:

* an **open** hour gets a provisional (live) record when something changed, at most
  every ``live_every_ms``;
* an hour **closes** when the host's watermark (newest sample end) passes hour end +
  ``grace_ms``; or, for a host that went quiet (nothing received for ``max_wait_ms`` by
  the clock), once the clock is ``max_wait_ms`` past the hour's end: a ``final`` record,
  revision 0. (A replay of old data closes by watermark while it flows, and its last
  hour when it stops.)
* a **closed** hour whose numbers change (a late sample, intensity arriving or revised)
  gets a ``revised`` record with the next revision;
* closed hours older than ``retention_ms`` behind the watermark are forgotten, and a
  sample that would fall into them is refused as ``too_late``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from schemas.bounds import Bounds
from schemas.records import EmissionHour, GpuSample, LiveEmission
from schemas.units import HOUR_MS
from streams.matching.core import (
    Factors,
    GpuState,
    HourEnergy,
    HourKey,
    SeqSet,
    apply_sample,
    emission_record,
    fingerprint,
)
from streams.matching.prices import PriceSource, intensity_version


@dataclass(frozen=True)
class Policy:
    grace_ms: int = 5 * 60_000
    max_wait_ms: int = 15 * 60_000
    live_every_ms: int = 5_000
    retention_ms: int = 72 * HOUR_MS
    # a closed hour with energy no intensity priced stays (to be revised when its price
    # comes) at least this long, whatever retention_ms says
    unpriced_retention_ms: int = 72 * HOUR_MS
    future_ms: int = 10 * 60_000
    max_age_ms: int | None = None  # refuse samples older than this (None: any age)
    bounds: Bounds = field(default_factory=Bounds)


@dataclass
class Emitted:
    revision: int = -1  # of the last final/revised record; -1: none yet
    fingerprint: tuple[object, ...] | None = None
    closed: bool = False
    live_at_ms: int = -(10**15)
    dirty: bool = True  # samples arrived since the last record
    version: tuple[str | None, ...] | None = None  # intensity that priced the last record
    unpriced: bool = False  # the last final/revised record has energy without a price


@dataclass
class HostState:
    """One host's working state. It is stored as one :class:`HourSlice` per hour."""

    host: str
    partition: int = -1  # samples partition that owns this host
    last_seen_ms: int = 0  # clock time of the newest batch received
    gpus: dict[str, GpuState] = field(default_factory=dict)
    emitted: dict[tuple[str, HourKey], Emitted] = field(default_factory=dict)
    # hours to store again and hours to delete, since the caller last took them
    changed_hours: set[int] = field(default_factory=set)
    forgotten_hours: set[int] = field(default_factory=set)
    # derived, not stored: the (GPU, key) pairs of each hour, and the hours whose keys are
    # all closed and clean, with the (zone, intensity version) they were settled at
    keys_by_hour: dict[int, dict[str, dict[HourKey, None]]] = field(default_factory=dict)
    settled: dict[int, tuple[str, tuple[str | None, ...]]] = field(default_factory=dict)

    @property
    def watermark_ms(self) -> int:
        return max((g.watermark_ms for g in self.gpus.values()), default=0)

    def take_changes(self) -> tuple[list[int], list[int]]:
        """(hours to store, hours to delete), sorted; forgets them."""
        changed = sorted(self.changed_hours - self.forgotten_hours)
        forgotten = sorted(self.forgotten_hours)
        self.changed_hours, self.forgotten_hours = set(), set()
        return changed, forgotten


@dataclass
class GpuHour:
    """One GPU's part of one hour."""

    site: str
    zone: str
    gpu_model: str
    watermark_ms: int
    applied: SeqSet
    hours: dict[HourKey, HourEnergy]


@dataclass
class HourSlice:
    """What a host holds for one hour: the unit the worker stores (key ``host|hour``).

    A batch changes the slices of the hours its samples touch, so the changelog carries
    what changed, not the whole host. Each slice carries its own applied sequences, so
    any set of stored slices is a consistent state.
    """

    host: str
    hour_start_ms: int
    partition: int
    last_seen_ms: int
    gpus: dict[str, GpuHour]
    emitted: dict[tuple[str, HourKey], Emitted]


def slice_of(state: HostState, hour_start_ms: int) -> HourSlice | None:
    """The slice of one hour (None when the host holds nothing for it)."""
    gpus: dict[str, GpuHour] = {}
    emitted: dict[tuple[str, HourKey], Emitted] = {}
    index = state.keys_by_hour.get(hour_start_ms, {})
    for uuid, gpu in state.gpus.items():
        applied = gpu.applied.get(hour_start_ms)
        if applied is None:
            continue
        hours = {key: gpu.hours[key] for key in index.get(uuid, ())}
        gpus[uuid] = GpuHour(gpu.site, gpu.zone, gpu.gpu_model, gpu.watermark_ms, applied, hours)
        for key in hours:
            mark = state.emitted.get((uuid, key))
            if mark is not None:
                emitted[(uuid, key)] = mark
    if not gpus:
        return None
    return HourSlice(state.host, hour_start_ms, state.partition, state.last_seen_ms, gpus, emitted)


def host_of(slices: list[HourSlice]) -> HostState:
    """The host state that ``slices`` (of one host) make up."""
    state = HostState(slices[0].host)
    for part in sorted(slices, key=lambda x: x.hour_start_ms):
        state.partition = part.partition
        state.last_seen_ms = max(state.last_seen_ms, part.last_seen_ms)
        for uuid, piece in part.gpus.items():
            gpu = state.gpus.get(uuid)
            if gpu is None:
                gpu = state.gpus[uuid] = GpuState(
                    state.host, piece.site, piece.zone, piece.gpu_model
                )
            gpu.applied[part.hour_start_ms] = piece.applied
            gpu.hours.update(piece.hours)
            gpu.watermark_ms = max(gpu.watermark_ms, piece.watermark_ms)
            members = state.keys_by_hour.setdefault(part.hour_start_ms, {})
            members.setdefault(uuid, {}).update(dict.fromkeys(piece.hours))
        state.emitted.update(part.emitted)
    return state


@dataclass
class Output:
    hourly: list[EmissionHour] = field(default_factory=list)
    live: list[LiveEmission] = field(default_factory=list)


def ingest(state: HostState, zone: str, site: str, sample: GpuSample) -> bool:
    """Apply one checked sample; False when it was a duplicate (already applied)."""
    gpu = state.gpus.get(sample["gpu_uuid"])
    if gpu is None:
        gpu = GpuState(state.host, site, zone, sample["gpu_model"])
        state.gpus[sample["gpu_uuid"]] = gpu
    known = len(gpu.hours)
    if not apply_sample(gpu, sample):
        return False
    # every (job, hour) of this GPU in the hours the sample touches changed (its coverage
    # at least); a new key is always one of the sample's jobs in one of them
    first = sample["start_ms"] - sample["start_ms"] % HOUR_MS
    last = sample["end_ms"] - 1 - (sample["end_ms"] - 1) % HOUR_MS
    hours = (first,) if first == last else range(first, last + 1, HOUR_MS)
    state.changed_hours.update(hours)
    uuid = sample["gpu_uuid"]
    made = len(gpu.hours) != known  # the sample made a key: index it
    for hour in hours:
        keys = (HourKey(hour, job["job_id"], job["tenant"]) for job in sample["jobs"])
        touch_hour(state, uuid, hour, [k for k in keys if k in gpu.hours] if made else ())
    return True


def touch_hour(state: HostState, uuid: str, hour: int, new_keys: Iterable[HourKey]) -> None:
    """A GPU's hour took samples: index ``new_keys`` (keys it made) in the hour, and mark
    every key of the GPU's hour dirty (its next record is due)."""
    members = state.keys_by_hour.get(hour)
    if members is None:
        members = state.keys_by_hour[hour] = {}
    mine = members.get(uuid)
    if mine is None:
        mine = members[uuid] = {}
    for key in new_keys:
        mine[key] = None
    state.settled.pop(hour, None)
    emitted = state.emitted
    for key in mine:
        mark = emitted.get((uuid, key))
        if mark is None:
            emitted[(uuid, key)] = Emitted()  # dirty
        else:
            mark.dirty = True


def tick(
    state: HostState,
    book: PriceSource,
    factors: Factors,
    now_ms: int,
    policy: Policy,
    *,
    versions: Callable[[str, int], tuple[str | None, ...]] | None = None,
) -> Output:
    """Records due for ``state`` now. ``versions`` is ``intensity_version`` on ``book``,
    memoised by the caller across hosts; by default per call.

    An hour whose keys are all closed and clean is settled: later ticks skip it until a
    sample touches it, its intensity changes or it falls out of retention. So a tick
    costs the open hours and what changed, not everything retained.
    """
    out = Output()
    version_of = versions or memoised_versions(book)
    run = _Pass(book, factors, now_ms, policy, out, version_of)
    watermark = state.watermark_ms
    horizon = watermark - policy.retention_ms
    unpriced_horizon = watermark - max(policy.retention_ms, policy.unpriced_retention_ms)
    dropped: set[int] = set()
    for hour in list(state.keys_by_hour):
        settled = state.settled.get(hour)
        if (
            settled is not None
            and hour + HOUR_MS >= horizon
            and version_of(settled[0], hour) == settled[1]
        ):
            continue
        members = state.keys_by_hour[hour]
        zones: set[str] = set()
        clean = True
        for uuid, keys in list(members.items()):
            gpu = state.gpus[uuid]
            zones.add(gpu.zone)
            for key in list(keys):
                emitted = _tick_key(state, uuid, gpu, key, run)
                keep = emitted.unpriced and hour + HOUR_MS >= unpriced_horizon
                if emitted.closed and hour + HOUR_MS < horizon and not keep:
                    del gpu.hours[key]
                    del state.emitted[(uuid, key)]
                    del keys[key]
                    dropped.add(hour)
                elif not emitted.closed:
                    clean = False
            if not keys:
                del members[uuid]
        if not members:
            del state.keys_by_hour[hour]
            state.settled.pop(hour, None)
        elif clean and len(zones) == 1:
            zone = zones.pop()
            state.settled[hour] = (zone, version_of(zone, hour))
    _forget(state, dropped, horizon)
    return out


def memoised_versions(book: PriceSource) -> Callable[[str, int], tuple[str | None, ...]]:
    """``intensity_version`` on ``book``, computed once per (zone, hour)."""
    seen: dict[tuple[str, int], tuple[str | None, ...]] = {}

    def version_of(zone: str, hour: int) -> tuple[str | None, ...]:
        version = seen.get((zone, hour))
        if version is None:
            version = seen[(zone, hour)] = intensity_version(book, zone, hour)
        return version

    return version_of


@dataclass
class _Pass:
    """What one tick() call shares between its keys."""

    book: PriceSource
    factors: Factors
    now_ms: int
    policy: Policy
    out: Output
    version_of: Callable[[str, int], tuple[str | None, ...]]


def _tick_key(state: HostState, uuid: str, gpu: GpuState, key: HourKey, run: _Pass) -> Emitted:
    """Close, revise or report one (GPU, job, hour); returns its emitted mark."""
    book, factors, now_ms, policy, out = run.book, run.factors, run.now_ms, run.policy, run.out
    emitted = state.emitted.setdefault((uuid, key), Emitted())
    hour_end = key.hour_start_ms + HOUR_MS
    version = run.version_of(gpu.zone, key.hour_start_ms)
    changed = emitted.dirty or version != emitted.version
    make = partial(emission_record, uuid, gpu, key, book, factors, now_ms=now_ms)
    closing = state.watermark_ms >= hour_end + policy.grace_ms
    quiet = now_ms - state.last_seen_ms >= policy.max_wait_ms and (
        now_ms >= hour_end + policy.max_wait_ms
    )
    before = len(out.hourly) + len(out.live)
    if not emitted.closed and (closing or quiet):
        record = make(status="final", revision=0)
        out.hourly.append(record)
        emitted.closed, emitted.revision = True, 0
        emitted.fingerprint = fingerprint(record)
        emitted.unpriced = _unpriced(record)
    elif not emitted.closed:
        if not changed or now_ms - emitted.live_at_ms < policy.live_every_ms:
            return emitted
        out.live.append(live(make(status="provisional", revision=0), gpu.hours[key].as_of_ms))
        emitted.live_at_ms = now_ms
    elif changed:
        record = make(status="revised", revision=emitted.revision + 1)
        if fingerprint(record) != emitted.fingerprint:
            out.hourly.append(record)
            emitted.revision += 1
            emitted.fingerprint = fingerprint(record)
            emitted.unpriced = _unpriced(record)
    emitted.dirty, emitted.version = False, version
    if len(out.hourly) + len(out.live) > before:
        state.changed_hours.add(key.hour_start_ms)
    return emitted


def _unpriced(record: EmissionHour) -> bool:
    average = record["average"]
    return record["energy_mj"] > 0 and (average is None or average["priced_fraction"] < 1)


def _forget(state: HostState, dropped: set[int], horizon_ms: int) -> None:
    """Forget the hours whose last key was dropped, and their applied sequences."""
    for gpu in state.gpus.values():  # and hours whose samples carried no job share
        dropped.update(
            h for h in gpu.applied if h + HOUR_MS < horizon_ms and not state.keys_by_hour.get(h)
        )
    for hour in dropped:
        if state.keys_by_hour.get(hour):
            state.changed_hours.add(hour)  # a later key of the hour stays
            continue
        for gpu in state.gpus.values():
            gpu.applied.pop(hour, None)
        state.forgotten_hours.add(hour)


def live(record: EmissionHour, as_of_ms: int) -> LiveEmission:
    average, marginal = record["average"], record["marginal"]
    return {
        "record_id": record["record_id"],
        "hour_start_ms": record["hour_start_ms"],
        "host": record["host"],
        "site": record["site"],
        "zone": record["zone"],
        "gpu_uuid": record["gpu_uuid"],
        "job_id": record["job_id"],
        "tenant": record["tenant"],
        "energy_mj": record["energy_mj"],
        "emissions_average_g": average["emissions_g"] if average else None,
        "emissions_marginal_g": marginal["emissions_g"] if marginal else None,
        "coverage": record["coverage"],
        "as_of_ms": as_of_ms,
        "computed_at_ms": record["computed_at_ms"],
    }


def sample_json(sample: GpuSample) -> bytes:
    """The rejected sample itself, for a dead letter's value."""
    return json.dumps(sample, sort_keys=True).encode()
