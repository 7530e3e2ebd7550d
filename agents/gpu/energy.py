"""Energy of each sample interval from successive readings (pure).

Primary: the delta of the driver's cumulative energy counter (exact). The counter
resets when the driver reloads: a decrease is detected and that interval falls back to
integrating power (trapezoid), flagged ``counter_reset``. GPUs without a counter always
integrate power, flagged ``no_energy_counter``. Readings that imply impossible power
(negative, NaN, above ``absurd_factor`` x the power limit) or go back in time are
rejected with a reason, never published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from agents.gpu.model import DeviceInfo, Reading
from schemas.records import EnergyMethod, SampleFlag

RejectReason = Literal["clock_skew", "absurd_power", "no_power_reading"]


@dataclass(frozen=True)
class Interval:
    """Energy of one device over [start_ms, end_ms)."""

    start_ms: int
    end_ms: int
    energy_mj: int
    method: EnergyMethod
    flags: tuple[SampleFlag, ...]
    reading: Reading  # the reading that closed the interval (utilisation, processes, ...)


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    detail: str


@dataclass
class EnergyMeter:
    """Turns one device's readings into intervals. State: the previous accepted reading."""

    device: DeviceInfo
    absurd_factor: float = 2.0
    last: Reading | None = None

    def step(self, reading: Reading) -> Interval | Rejected | None:
        """Feed the next reading; None for the first one (nothing to measure yet)."""
        previous = self.last
        if previous is not None and reading.t_ms <= previous.t_ms:
            return Rejected("clock_skew", f"reading at {reading.t_ms} not after {previous.t_ms}")
        self.last = reading
        if previous is None:
            return None
        return self._interval(previous, reading)

    def _interval(self, previous: Reading, reading: Reading) -> Interval | Rejected:
        duration_ms = reading.t_ms - previous.t_ms
        limit_mj = self.absurd_factor * self.device.power_limit_w * duration_ms
        counter = _counter_delta(previous, reading)
        if counter is not None and 0 <= counter <= limit_mj:
            return Interval(previous.t_ms, reading.t_ms, counter, "counter", (), reading)
        flag: SampleFlag = "no_energy_counter" if counter is None else "counter_reset"
        integral = _power_integral_mj(previous, reading)
        if integral is None:
            return Rejected("no_power_reading", f"{flag} and no valid power reading")
        if not 0 <= integral <= limit_mj:
            watts = integral / duration_ms
            return Rejected("absurd_power", f"{watts:.0f} W vs limit {self.device.power_limit_w} W")
        return Interval(previous.t_ms, reading.t_ms, integral, "power_integral", (flag,), reading)


def _counter_delta(previous: Reading, reading: Reading) -> int | None:
    if previous.energy_counter_mj is None or reading.energy_counter_mj is None:
        return None
    return reading.energy_counter_mj - previous.energy_counter_mj


def _power_integral_mj(previous: Reading, reading: Reading) -> int | None:
    """Trapezoid of the two power readings: W x ms = mJ."""
    powers = [previous.power_w, reading.power_w]
    valid = [p for p in powers if p is not None and math.isfinite(p) and p >= 0]
    if not valid:
        return None
    mean_w = sum(valid) / len(valid)
    return round(mean_w * (reading.t_ms - previous.t_ms))
