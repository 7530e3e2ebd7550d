"""Carbon-aware signals (pure, no I/O): the eco tier, follow-the-sun, carbon-weighted routing.

* :class:`EcoTier` turns a zone's hourly intensity into ``normal`` / ``eco`` with
  hysteresis: enter eco when the intensity's percentile over a rolling window reaches
  ``enter_pct`` (or the intensity reaches ``enter_g``), leave only below ``leave_pct``
  (and ``leave_g``), and never change mode within ``min_dwell_h`` of the last change.
  Stale or missing intensity gives ``unknown``, never a guess.
* :func:`follow_the_sun` finds the zone and start hour with the lowest expected
  emissions for a flexible job over hourly series (forecast or history), in O(n) per zone
  with a sliding window; :func:`brute_force_window` is the obvious O(n·k) search it must
  agree with.
* :func:`rank` scores routing candidates:
  ``score = w_latency · latency_ms / latency_ref_ms + w_carbon · intensity / carbon_ref``
  (lower is better) among candidates within the latency SLO.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from schemas.errors import RejectedInputError
from schemas.units import HOUR_MS

Mode = Literal["normal", "eco", "unknown"]


class SignalInputError(RejectedInputError):
    """A request the signals cannot answer truthfully (the API answers 4xx with it)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(code, message)


# -- eco tier ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EcoPolicy:
    window_h: int = 24 * 14
    enter_pct: float = 70.0
    leave_pct: float = 55.0
    enter_g: float | None = None  # absolute thresholds, optional
    leave_g: float | None = None
    min_dwell_h: float = 3.0
    min_history_h: int = 24
    stale_after_h: float = 3.0


@dataclass(frozen=True)
class EcoDecision:
    zone: str
    mode: Mode
    changed: bool
    intensity_g_per_kwh: float | None
    percentile: float | None
    at_ms: int
    reason: str


@dataclass
class EcoTier:
    """One zone's eco state; feed it hourly intensities in time order."""

    zone: str
    policy: EcoPolicy = field(default_factory=EcoPolicy)
    mode: Mode = "unknown"
    since_ms: int | None = None
    last_at_ms: int | None = None
    _window: deque[tuple[int, float]] = field(default_factory=deque)
    _sorted: list[float] = field(default_factory=list)

    def percentile_of(self, value: float) -> float:
        """Share (0-100) of the window's values at or below ``value``."""
        return 100.0 * bisect.bisect_right(self._sorted, value) / len(self._sorted)

    def observe(self, at_ms: int, intensity: float) -> EcoDecision:
        if not math.isfinite(intensity) or intensity < 0:
            raise SignalInputError(f"intensity {intensity} is not a valid value")
        if self.last_at_ms is not None and at_ms <= self.last_at_ms:
            raise SignalInputError("observations must move forward in time")
        self.last_at_ms = at_ms
        self._window.append((at_ms, intensity))
        bisect.insort(self._sorted, intensity)
        horizon = at_ms - self.policy.window_h * HOUR_MS
        while self._window and self._window[0][0] <= horizon:
            _, old = self._window.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        pct = self.percentile_of(intensity)
        if len(self._window) < self.policy.min_history_h:
            return self._decide(
                at_ms,
                "unknown",
                intensity,
                pct,
                f"{len(self._window)} h of history, need {self.policy.min_history_h} h",
            )
        p = self.policy
        high = pct >= p.enter_pct or (p.enter_g is not None and intensity >= p.enter_g)
        low = pct < p.leave_pct and (p.leave_g is None or intensity < p.leave_g)
        dwelling = (
            self.since_ms is not None
            and self.mode != "unknown"
            and at_ms - self.since_ms < p.min_dwell_h * HOUR_MS
        )
        target: Mode = self.mode if self.mode != "unknown" else ("eco" if high else "normal")
        if self.mode == "normal" and high:
            target = "eco"
        elif self.mode == "eco" and low:
            target = "normal"
        if dwelling and target != self.mode:
            reason = (
                f"would switch to {target}, but in {self.mode} for less than {p.min_dwell_h:g} h"
            )
            return self._decide(at_ms, self.mode, intensity, pct, reason, keep=True)
        reason = (
            f"{intensity:.0f} g/kWh is at the {pct:.0f}th percentile of the last "
            f"{len(self._window)} h (eco from {p.enter_pct:g}, normal below {p.leave_pct:g})"
        )
        return self._decide(at_ms, target, intensity, pct, reason)

    def stale(self, now_ms: int) -> EcoDecision | None:
        """An ``unknown`` decision when the last intensity is too old (None if fresh)."""
        if (
            self.last_at_ms is None
            or now_ms - self.last_at_ms > self.policy.stale_after_h * HOUR_MS
        ):
            age = (
                "none yet"
                if self.last_at_ms is None
                else f"{(now_ms - self.last_at_ms) / HOUR_MS:.1f} h old"
            )
            return self._decide(now_ms, "unknown", None, None, f"intensity is stale ({age})")
        return None

    def _decide(
        self,
        at_ms: int,
        mode: Mode,
        intensity: float | None,
        pct: float | None,
        reason: str,
        *,
        keep: bool = False,
    ) -> EcoDecision:
        changed = mode != self.mode and not keep
        if changed:
            self.mode, self.since_ms = mode, at_ms
        return EcoDecision(self.zone, self.mode, changed, intensity, pct, at_ms, reason)


# -- follow the sun ---------------------------------------------------------------------


@dataclass(frozen=True)
class FlexibleJob:
    energy_kwh: float  # total, spread evenly over its duration
    duration_h: int
    earliest_start_ms: int
    deadline_ms: int  # the job must have finished by then
    zones: tuple[str, ...]
    home_zone: str


@dataclass(frozen=True)
class Window:
    zone: str
    start_ms: int
    emissions_g: float


@dataclass(frozen=True)
class Recommendation:
    best: Window
    now_at_home: Window | None
    saving_g: float | None
    candidates: int


def _better(best: Window | None, candidate: Window) -> Window:
    """The lower-emission window; ties go to the zone name, then the earlier start."""
    if best is None:
        return candidate
    key = (candidate.emissions_g, candidate.zone, candidate.start_ms)
    return candidate if key < (best.emissions_g, best.zone, best.start_ms) else best


def _validate(job: FlexibleJob, now_ms: int) -> None:
    if job.duration_h <= 0 or not math.isfinite(job.energy_kwh) or job.energy_kwh < 0:
        raise SignalInputError("duration must be positive and energy non-negative")
    if job.deadline_ms <= now_ms:
        raise SignalInputError("the deadline is in the past")
    if job.deadline_ms - job.earliest_start_ms < job.duration_h * HOUR_MS:
        raise SignalInputError("the job cannot fit between its earliest start and deadline")
    if not job.zones:
        raise SignalInputError("no zones allowed")


def _starts(job: FlexibleJob, series: Mapping[int, float]) -> list[int]:
    first = -(-job.earliest_start_ms // HOUR_MS) * HOUR_MS
    last = job.deadline_ms - job.duration_h * HOUR_MS
    return [h for h in sorted(series) if first <= h <= last]


def brute_force_window(
    job: FlexibleJob, series: Mapping[str, Mapping[int, float]]
) -> Window | None:
    """The reference: every zone, every start, every hour summed."""
    best: Window | None = None
    per_hour = job.energy_kwh / job.duration_h
    for zone in job.zones:
        hours = series.get(zone, {})
        for start in _starts(job, hours):
            needed = [start + i * HOUR_MS for i in range(job.duration_h)]
            if all(h in hours for h in needed):
                grams = math.fsum(hours[h] for h in needed) * per_hour
                best = _better(best, Window(zone, start, grams))
    return best


def follow_the_sun(
    job: FlexibleJob, series: Mapping[str, Mapping[int, float]], now_ms: int
) -> Recommendation:
    """The zone and start hour with the lowest expected emissions (sliding windows)."""
    _validate(job, now_ms)
    unknown = [z for z in job.zones if z not in series]
    if unknown:
        raise SignalInputError(f"no intensity for zone(s) {', '.join(unknown)}")
    per_hour = job.energy_kwh / job.duration_h
    best: Window | None = None
    candidates = 0
    for zone in job.zones:
        hours = series[zone]
        run: deque[int] = deque()
        total = 0.0
        for h in sorted(hours):
            if run and h != run[-1] + HOUR_MS:  # a gap: restart the window
                run.clear()
                total = 0.0
            run.append(h)
            total += hours[h]
            if len(run) > job.duration_h:
                total -= hours[run.popleft()]
            if len(run) == job.duration_h:
                start = run[0]
                first = -(-job.earliest_start_ms // HOUR_MS) * HOUR_MS
                if first <= start <= job.deadline_ms - job.duration_h * HOUR_MS:
                    candidates += 1
                    # the running total drifts in floating point: re-add exactly (fsum)
                    # only when it may beat the best so far
                    if best is None or total * per_hour <= best.emissions_g * (1 + 1e-9) + 1e-9:
                        grams = math.fsum(hours[x] for x in run) * per_hour
                        best = _better(best, Window(zone, start, grams))
    if best is None:
        raise SignalInputError("no complete window of intensity data between start and deadline")
    home = series.get(job.home_zone, {})
    now_hour = max(now_ms, job.earliest_start_ms) // HOUR_MS * HOUR_MS
    needed = [now_hour + i * HOUR_MS for i in range(job.duration_h)]
    now_at_home = (
        Window(job.home_zone, now_hour, math.fsum(home[h] for h in needed) * per_hour)
        if all(h in home for h in needed)
        else None
    )
    saving = None if now_at_home is None else now_at_home.emissions_g - best.emissions_g
    return Recommendation(best, now_at_home, saving, candidates)


# -- routing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    node: str
    zone: str
    latency_ms: float


@dataclass(frozen=True)
class Weights:
    latency: float = 0.5
    carbon: float = 0.5
    latency_ref_ms: float = 50.0
    carbon_ref_g_per_kwh: float = 400.0
    slo_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("latency", "carbon", "latency_ref_ms", "carbon_ref_g_per_kwh"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"weights.{name} must be a finite number, not {value!r}")
        if self.latency < 0 or self.carbon < 0:
            raise ValueError("weights must not be negative")
        if self.latency_ref_ms <= 0 or self.carbon_ref_g_per_kwh <= 0:
            raise ValueError("latency_ref_ms and carbon_ref_g_per_kwh must be above 0")


@dataclass(frozen=True)
class Ranked:
    node: str
    zone: str
    latency_ms: float
    intensity_g_per_kwh: float
    score: float


def rank(
    candidates: Sequence[Candidate],
    intensity: Mapping[str, float],
    weights: Weights,
) -> list[Ranked]:
    """Candidates within the SLO, best (lowest score) first. ``intensity``: fresh values
    only; a candidate in a zone without one raises (the caller decides, not a guess)."""
    if not candidates:
        raise SignalInputError("no candidates")
    if weights.latency < 0 or weights.carbon < 0 or weights.latency + weights.carbon == 0:
        raise SignalInputError("weights must be non-negative and not both zero")
    missing = sorted({c.zone for c in candidates if c.zone not in intensity})
    if missing:
        raise SignalInputError(f"no fresh intensity for zone(s) {', '.join(missing)}")
    lat_k = weights.latency / weights.latency_ref_ms
    co2_k = weights.carbon / weights.carbon_ref_g_per_kwh
    slo = weights.slo_ms if weights.slo_ms is not None else math.inf
    ranked = [
        Ranked(
            c.node,
            c.zone,
            c.latency_ms,
            intensity[c.zone],
            lat_k * c.latency_ms + co2_k * intensity[c.zone],
        )
        for c in candidates
        if c.latency_ms <= slo
    ]
    if not ranked:
        raise SignalInputError(f"no candidate within the latency SLO of {slo:g} ms")
    ranked.sort(key=lambda r: (r.score, r.latency_ms, r.node))
    return ranked
