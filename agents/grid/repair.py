"""Gaps and glitches in a series of intensity values: detect, decide, fill (pure, no I/O).

Real grid data is imperfect. An EIA-930 file can have a day of empty hours (a reporting
outage), and a reporting glitch can put ~45 g/kWh into a ~350 g/kWh zone for hours, which
priced as is makes those hours' emissions 85 % low. So, per series of one batch (a
response, a file):

* **Outliers.** A value below ``low_ratio`` or above ``high_ratio`` times the median of the
  series' accepted values in the ``window_h`` before it (with at least ``min_history`` of
  them), *and* a jump by more than ``step_ratio`` from the last accepted value, and at
  least ``min_delta_g`` away from the median (FR's 7.6 after 16.6 g/kWh is no glitch), is
  implausible: it is rejected with the reason ``outlier`` (a dead letter) and its period is
  treated as missing. All are needed: a windy night in GB really falls to a third of the
  day's median (66 against 206 g/kWh in the NESO fixture) but gets there step by step; a
  reporting glitch jumps there in one period (PJM: 300 to 47 g/kWh; the shipped GB 2023
  file has two, 149 to 9 g/kWh on 2023-06-07 10:00-12:00Z and 76 to 5 on 2023-09-28,
  both "96-99 % renewable"). Outliers are left out of later medians, so a glitch of
  several hours is caught whole; after ``window_h`` of them the history is gone and values
  are accepted again (a real change of regime outlasts a glitch). Only average-signal
  series are judged by default: a marginal signal (MOER) really falls to ~0 when
  renewables are curtailed.
* **Fills.** Each missing stretch of at most ``max_fill_h`` between two accepted values is
  filled, period by period, with an estimate: conservative by default, the highest of the
  value before it, the value after it, the same period a week earlier (when the batch
  has it) and the mean of the ``window_h`` before it. A fill is never lower than what it
  replaces: an outlier's fill is at least the outlier. Fills are ``estimated``, their
  ``estimation_method`` says so, their provider is ``fill:<provider>`` and they rank
  below every real provider, so a real value for the period, arriving later, replaces
  one (a revision) and a fill never replaces a real value.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from agents.grid.model import Gap, Observation, Problem, iso
from schemas.units import DAY_MS, HOUR_MS

FILL_RANK = 1000  # below every provider of a chain (they rank 0, 1, ...)
FILL_PREFIX = "fill:"
WEEK_MS = 7 * DAY_MS


@dataclass(frozen=True)
class RepairPolicy:
    fill: bool = True
    max_fill_h: float = 48.0
    window_h: float = 24.0
    low_ratio: float = 0.35
    high_ratio: float = 3.0
    step_ratio: float = 2.0
    min_delta_g: float = 50.0
    min_history: int = 6
    # marginal signals jump for real (a MOER falls to ~0 when renewables are curtailed):
    # only average series are judged unless this says otherwise
    judge_marginal: bool = False


@dataclass
class Repaired:
    good: list[Observation] = field(default_factory=list)  # real values, outliers removed
    fills: list[Observation] = field(default_factory=list)
    outliers: list[Problem] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)  # every missing stretch, filled or not


def is_fill(provider: str) -> bool:
    return provider.startswith(FILL_PREFIX)


def repair(observations: Iterable[Observation], policy: RepairPolicy) -> Repaired:
    """Outliers out, gaps found and (per ``policy``) filled; see the module doc."""
    out = Repaired()
    series: dict[tuple[str, str, str], list[Observation]] = {}
    for obs in observations:
        series.setdefault(obs.series, []).append(obs)
    for items in series.values():
        items.sort(key=lambda o: (o.start_ms, o.end_ms))
        if items[0].signal == "average" or policy.judge_marginal:
            kept, replaced = _without_outliers(items, policy, out.outliers)
        else:
            kept, replaced = items, {}
        by_start = {o.start_ms: o.value for o in kept}
        out.good += kept
        for before, after in itertools.pairwise(kept):
            if after.start_ms <= before.end_ms:
                continue
            gap = Gap(after.zone, after.signal, after.variant, before.end_ms, after.start_ms)
            out.gaps.append(gap)
            if policy.fill and gap.end_ms - gap.start_ms <= policy.max_fill_h * HOUR_MS:
                out.fills += _fills(
                    gap,
                    before,
                    after,
                    kept=kept,
                    by_start=by_start,
                    replaced=replaced,
                    policy=policy,
                )
    out.good.sort(key=lambda o: (o.start_ms, o.zone, o.signal, o.variant))
    out.fills.sort(key=lambda o: (o.start_ms, o.zone, o.signal, o.variant))
    return out


def _without_outliers(
    items: list[Observation], policy: RepairPolicy, problems: list[Problem]
) -> tuple[list[Observation], dict[int, float]]:
    """The accepted values, and the rejected outliers' values by period start."""
    window_ms = policy.window_h * HOUR_MS
    kept: list[Observation] = []
    replaced: dict[int, float] = {}
    window: deque[Observation] = deque()  # the kept values of the window, oldest first
    ordered: list[float] = []  # the same values, sorted (for the median)
    for obs in items:
        while window and obs.start_ms - window[0].start_ms > window_ms:
            del ordered[bisect.bisect_left(ordered, window.popleft().value)]
        if len(window) >= policy.min_history:
            median = _median(ordered)
            low, high = median * policy.low_ratio, median * policy.high_ratio
            last = window[-1].value
            jumped = not last / policy.step_ratio <= obs.value <= last * policy.step_ratio
            far = abs(obs.value - median) >= policy.min_delta_g
            if jumped and far and not low <= obs.value <= high:
                problems.append(
                    Problem(
                        "outlier",
                        f"{obs.zone} {iso(obs.start_ms)} {obs.signal}/{obs.variant}: "
                        f"{obs.value:g} g/kWh against a median of {median:.1f} over the "
                        f"{policy.window_h:g} h before it (accepted {low:.1f}..{high:.1f}), "
                        f"and {last:.1f} just before: implausible, replaced by an estimate",
                        obs.raw,
                        obs.zone,
                    )
                )
                replaced[obs.start_ms] = obs.value
                continue
        kept.append(obs)
        window.append(obs)
        bisect.insort(ordered, obs.value)
    return kept, replaced


def _median(ordered: list[float]) -> float:
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _fills(
    gap: Gap,
    before: Observation,
    after: Observation,
    *,
    kept: list[Observation],
    by_start: dict[int, float],
    replaced: dict[int, float],
    policy: RepairPolicy,
) -> list[Observation]:
    step = before.end_ms - before.start_ms
    window_ms = policy.window_h * HOUR_MS
    # the kept values ending in the window before the gap (kept is sorted, no overlaps)
    first = bisect.bisect_left(kept, gap.start_ms - window_ms, key=lambda o: o.end_ms)
    last = bisect.bisect_right(kept, gap.start_ms, key=lambda o: o.end_ms)
    recent = [o.value for o in kept[first:last] if 0 <= gap.start_ms - o.end_ms < window_ms]
    fills = []
    start = gap.start_ms
    while start < gap.end_ms:
        end = min(start + step, gap.end_ms)
        candidates = {"before": before.value, "after": after.value}
        if start - WEEK_MS in by_start:
            candidates["week_before"] = by_start[start - WEEK_MS]
        if recent:
            candidates["mean"] = sum(recent) / len(recent)
        if start in replaced:  # never lower than the outlier it replaces
            candidates["outlier"] = replaced[start]
        basis = max(candidates, key=lambda k: candidates[k])
        fills.append(
            replace(
                before,
                start_ms=start,
                end_ms=end,
                value=candidates[basis],
                provider=FILL_PREFIX + before.provider,
                kind="estimated",
                estimation_method=f"llcr_{'outlier' if start in replaced else 'gap'}_fill:"
                f"max({','.join(sorted(candidates))})={basis}",
                raw="",
            )
        )
        start = end
    return fills
