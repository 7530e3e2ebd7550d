"""Clocks shared by the deployables: the wall clock or a simulated one (for replays)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds of ISO-8601 text (naive = UTC) or of a plain integer."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def simulated_clock(start: str, speed: float, anchor_ms: int | None = None) -> Callable[[], float]:
    """Epoch seconds of a clock that starts at ``start`` (ISO-8601, naive = UTC) and runs
    ``speed`` times faster than the wall clock.

    It reads ``start`` when this process calls it, or, with ``anchor_ms``, at that wall-clock
    epoch millisecond: processes given the same start and anchor share one clock (what
    `llcr up` does, so a second of start-up skew is not ``speed`` seconds of event time).
    """
    origin_s = parse_time_ms(start) / 1000
    if anchor_ms is not None:
        anchor_s = anchor_ms / 1000
        return lambda: origin_s + (time.time() - anchor_s) * speed
    wall0 = time.monotonic()
    return lambda: origin_s + (time.monotonic() - wall0) * speed


def wall_ms_of(sim_ms: float, start: str, speed: float, anchor_ms: int) -> float:
    """The wall-clock epoch ms at which the anchored simulated clock reads ``sim_ms``."""
    return anchor_ms + (sim_ms - parse_time_ms(start)) / speed


def clock_ms(
    sim_start: str | None, sim_speed: float, sim_anchor_ms: int | None = None
) -> Callable[[], int]:
    """Epoch milliseconds of the wall clock, or of a simulated one when ``sim_start``."""
    if sim_start is None:
        return lambda: int(time.time() * 1000)
    seconds = simulated_clock(sim_start, sim_speed, sim_anchor_ms)
    return lambda: int(seconds() * 1000)
