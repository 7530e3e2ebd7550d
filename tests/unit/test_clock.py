"""The simulated clocks that `llcr up` gives every process."""

from __future__ import annotations

import time

import pytest

from schemas.clock import clock_ms, parse_time_ms, simulated_clock, wall_ms_of


def test_processes_with_the_same_anchor_share_one_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    wall = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: wall[0])  # the wall clock, stopped
    anchor_ms = int(wall[0] * 1000) - 10_000  # ten wall seconds ago
    first = simulated_clock("2023-01-01T00:00:00Z", 360.0, anchor_ms)
    wall[0] += 5  # the second process starts five seconds later
    second = simulated_clock("2023-01-01T00:00:00Z", 360.0, anchor_ms)
    assert first() == second() == parse_time_ms("2023-01-01T00:00:00Z") / 1000 + 15 * 360


def test_without_an_anchor_the_clock_starts_when_made() -> None:
    clock = simulated_clock("2023-01-01T00:00:00Z", 3600.0)
    assert 0 <= clock() - parse_time_ms("2023-01-01T00:00:00Z") / 1000 < 3600 * 0.5


def test_wall_time_of_a_simulated_instant_inverts_the_clock() -> None:
    start, anchor_ms = "2023-06-01T12:00:00Z", 1_800_000_000_000
    hour_later = parse_time_ms(start) + 3_600_000
    assert wall_ms_of(hour_later, start, 360.0, anchor_ms) == anchor_ms + 10_000
    assert wall_ms_of(parse_time_ms(start), start, 360.0, anchor_ms) == anchor_ms


def test_clock_ms_is_the_wall_clock_without_a_start() -> None:
    assert abs(clock_ms(None, 1.0)() - time.time() * 1000) < 1000
    simulated = clock_ms("2023-01-01T00:00:00Z", 1.0, int(time.time() * 1000))()
    assert abs(simulated - parse_time_ms("2023-01-01T00:00:00Z")) < 1000
