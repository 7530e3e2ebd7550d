"""An independent, slow, obviously right reference for temporal matching (tests only).

For every sample and job share it cuts [start, end) at every hour boundary and at every
boundary of every intensity period of the zone, finds for each piece the event that
wins at that instant (the greatest (revision, published_at_ms, event_id) among the
events covering it), and adds energy x overlap / duration x intensity. No bins, no
state, no streaming: a different route to the same integral.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.records import GpuSample, GridIntensityEvent

HOUR_MS = 3_600_000
MJ_PER_KWH = 3_600_000_000


@dataclass
class RefHour:
    energy_mj: float = 0.0
    average_g: float | None = None
    marginal_g: float | None = None


def _winner(
    events: list[GridIntensityEvent], t: int, signal: str, variant: str
) -> GridIntensityEvent | None:
    covering = [
        e
        for e in events
        if e["signal"] == signal
        and e["variant"] == variant
        and e["period_start_ms"] <= t < e["period_end_ms"]
    ]
    if not covering:
        return None
    return max(covering, key=lambda e: (e["revision"], e["published_at_ms"], e["event_id"]))


def reference(
    samples: Iterable[tuple[str, str, GpuSample]],
    events: Iterable[GridIntensityEvent],
    average_variant: str = "lifecycle",
) -> dict[tuple[int, str, str, str, str], RefHour]:
    """Hours keyed (hour_start, host, gpu_uuid, job_id, tenant). ``samples``: (host, zone, s)."""
    seen: set[tuple[str, int]] = set()
    by_zone: dict[str, list[GridIntensityEvent]] = defaultdict(list)
    for event in events:
        by_zone[event["zone"]].append(event)
    out: dict[tuple[int, str, str, str, str], RefHour] = {}
    for host, zone, sample in samples:
        if (sample["gpu_uuid"], sample["seq"]) in seen:
            continue
        seen.add((sample["gpu_uuid"], sample["seq"]))
        start, end = sample["start_ms"], sample["end_ms"]
        if end <= start:
            continue
        zone_events = by_zone.get(zone, [])
        cuts = {start, end}
        cuts.update(h for h in range(start - start % HOUR_MS + HOUR_MS, end, HOUR_MS))
        for e in zone_events:
            cuts.update(t for t in (e["period_start_ms"], e["period_end_ms"]) if start < t < end)
        points = sorted(cuts)
        for job in sample["jobs"]:
            for a, b in itertools.pairwise(points):
                hour = a - a % HOUR_MS
                key = (hour, host, sample["gpu_uuid"], job["job_id"], job["tenant"])
                row = out.setdefault(key, RefHour())
                piece = job["energy_mj"] * (b - a) / (end - start)
                row.energy_mj += piece
                for signal, variant, attr in (
                    ("average", average_variant, "average_g"),
                    ("marginal", "direct", "marginal_g"),
                ):
                    win = _winner(zone_events, a, signal, variant)
                    if win is not None:
                        grams = piece / MJ_PER_KWH * win["intensity_g_per_kwh"]
                        setattr(row, attr, (getattr(row, attr) or 0.0) + grams)
    return out
