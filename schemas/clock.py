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


def simulated_clock(start: str, speed: float) -> Callable[[], float]:
    """Epoch seconds of a clock that starts at ``start`` (ISO-8601, naive = UTC) and runs
    ``speed`` times faster than the wall clock."""
    origin_s = parse_time_ms(start) / 1000
    wall0 = time.monotonic()
    return lambda: origin_s + (time.monotonic() - wall0) * speed


def clock_ms(sim_start: str | None, sim_speed: float) -> Callable[[], int]:
    """Epoch milliseconds of the wall clock, or of a simulated one when ``sim_start``."""
    if sim_start is None:
        return lambda: int(time.time() * 1000)
    seconds = simulated_clock(sim_start, sim_speed)
    return lambda: int(seconds() * 1000)
