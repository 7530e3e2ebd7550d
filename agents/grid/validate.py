"""Validation of one batch of observations (one response, or one file) (pure).

Rejects, with a reason: negative, NaN or infinite values, values above the ceiling,
periods with end <= start, zones that are not known, and periods of one series that are
duplicated or overlap with *different* values (every conflicting observation is
rejected: there is no way to know which is right). An exact duplicate is published once
and reported. Gaps and implausible values are ``agents.grid.repair``'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agents.grid.model import Observation, Problem, iso

ZONE_ID = re.compile(r"^[A-Z]{2}(-[A-Z0-9]+)*$")


@dataclass
class Checked:
    good: list[Observation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def zone_is_known(zones: Iterable[str] | None) -> Callable[[str], bool]:
    """Known zones: the configured list, or (without one) any Electricity Maps-style id."""
    if zones:
        allowed = set(zones)
        return allowed.__contains__
    return lambda zone: bool(ZONE_ID.match(zone))


def _check_one(obs: Observation, ceiling: float, known: Callable[[str], bool]) -> Problem | None:
    where = f"{obs.zone} {iso(obs.start_ms)}..{iso(obs.end_ms)}"
    if not known(obs.zone):
        return Problem("unknown_zone", f"zone {obs.zone!r} is not a configured zone", obs.raw)
    if not math.isfinite(obs.value):
        return Problem("not_a_number", f"{where}: value is {obs.value}", obs.raw, obs.zone)
    if obs.value < 0:
        return Problem("negative", f"{where}: {obs.value} g/kWh is negative", obs.raw, obs.zone)
    if obs.value > ceiling:
        return Problem(
            "above_ceiling",
            f"{where}: {obs.value} g/kWh is above the ceiling of {ceiling}",
            obs.raw,
            obs.zone,
        )
    if obs.end_ms <= obs.start_ms:
        return Problem(
            "empty_period", f"{where}: period end is not after its start", obs.raw, obs.zone
        )
    return None


def check(
    observations: Iterable[Observation], *, ceiling: float, known: Callable[[str], bool]
) -> Checked:
    out = Checked()
    series: dict[tuple[str, str, str], list[Observation]] = {}
    for obs in observations:
        problem = _check_one(obs, ceiling, known)
        if problem is not None:
            out.problems.append(problem)
        else:
            series.setdefault(obs.series, []).append(obs)
    for items in series.values():
        items.sort(key=lambda o: (o.start_ms, o.end_ms))
        out.good.extend(_resolve_overlaps(items, out.problems))
    out.good.sort(key=lambda o: (o.start_ms, o.zone, o.signal, o.variant))
    return out


def _resolve_overlaps(items: list[Observation], problems: list[Problem]) -> list[Observation]:
    """Drop exact duplicates (reported) and every member of a conflicting overlap."""
    groups: list[list[Observation]] = []
    end = -1
    for obs in items:
        if groups and obs.start_ms < end:
            groups[-1].append(obs)
            end = max(end, obs.end_ms)
        else:
            groups.append([obs])
            end = obs.end_ms
    kept = []
    for group in groups:
        first = group[0]
        same = all(
            (o.start_ms, o.end_ms, o.value) == (first.start_ms, first.end_ms, first.value)
            for o in group
        )
        if same:
            kept.append(first)
            problems.extend(
                Problem(
                    "duplicate",
                    f"{o.zone} {o.start_ms}: repeated with the same value; published once",
                    o.raw,
                    o.zone,
                )
                for o in group[1:]
            )
            continue
        values = sorted({o.value for o in group})
        problems.extend(
            Problem(
                "conflicting_duplicate",
                f"{o.zone} {iso(o.start_ms)}..{iso(o.end_ms)} {o.variant}: overlapping periods "
                f"disagree ({', '.join(map(str, values))} g/kWh); none is published",
                o.raw,
                o.zone,
            )
            for o in group
        )
    return kept
