"""On-site carbon capture (pure): what to command for an hour, and how a unit ramps.

Per site-hour, from the recorded emissions of that hour:

* waste heat available = recoverable fraction × IT energy;
* capturable = min(capacity × 1 h, heat ÷ thermal need, obligation);
* parasitic = capturable × electric need × the hour's grid intensity (the signal the
  emissions were priced with);
* the unit runs only when net = capturable − parasitic is positive and above a minimum.

A unit ramps at most ``ramp_g_per_h_per_h`` per hour towards its target, so what it
captures over an interval is the exact integral of a piecewise-linear rate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from schemas.units import HOUR_MS
from streams.settings import CaptureUnitConfig

G_PER_T = 1_000_000


@dataclass(frozen=True)
class CapturePlan:
    action: Literal["scale_up", "scale_down", "hold", "stop"]
    target_rate_g_per_h: float
    expected_capture_g: float
    expected_parasitic_g: float
    reason: str

    @property
    def expected_net_g(self) -> float:
        return self.expected_capture_g - self.expected_parasitic_g


def plan(
    unit: CaptureUnitConfig,
    *,
    it_energy_kwh: float,
    obligation_g: float,
    intensity_g_per_kwh: float,
    previous_rate_g_per_h: float,
    running_h: float = float("inf"),
) -> CapturePlan:
    """The command for one site-hour (see the module docstring). A unit that has run for
    less than ``min_run_h`` holds its rate instead of stopping."""
    heat_kwh = unit.recoverable_heat_fraction * max(0.0, it_energy_kwh)
    by_heat = heat_kwh / unit.thermal_kwh_per_t * G_PER_T
    capacity = unit.capacity_kg_per_h * 1000
    capturable = max(0.0, min(capacity, by_heat, obligation_g))
    parasitic = capturable * unit.electric_kwh_per_t / G_PER_T * intensity_g_per_kwh
    net = capturable - parasitic
    limit = (
        "capacity" if capturable == capacity else "heat" if capturable == by_heat else "obligation"
    )
    if net <= 0 or net < unit.min_net_g:
        why = (
            f"net {net:.0f} g below minimum {unit.min_net_g:.0f} g "
            f"(capturable {capturable:.0f} g, parasitic {parasitic:.0f} g at "
            f"{intensity_g_per_kwh:.0f} g/kWh)"
        )
        if previous_rate_g_per_h > 0 and running_h < unit.min_run_h:
            held = previous_rate_g_per_h
            return CapturePlan(
                "hold",
                held,
                held,
                held * unit.electric_kwh_per_t / G_PER_T * intensity_g_per_kwh,
                f"minimum run time ({running_h:.1f} of {unit.min_run_h:g} h): {why}",
            )
        return CapturePlan("stop", 0.0, 0.0, 0.0, why)
    action: Literal["scale_up", "scale_down", "hold"] = (
        "scale_up"
        if capturable > previous_rate_g_per_h
        else "scale_down"
        if capturable < previous_rate_g_per_h
        else "hold"
    )
    reason = (
        f"capture {capturable:.0f} g (limited by {limit}), parasitic {parasitic:.0f} g at "
        f"{intensity_g_per_kwh:.0f} g/kWh, net {net:.0f} g"
    )
    return CapturePlan(action, capturable, capturable, parasitic, reason)


def command_id(site: str, unit_id: str, hour_ms: int) -> str:
    """Deterministic: re-issuing the command for the same hour is idempotent."""
    digest = hashlib.sha256(f"{site}\0{unit_id}\0{hour_ms}".encode()).hexdigest()
    return f"cap-{digest[:24]}"


def ramped_capture_g(
    rate_from: float, target: float, ramp_per_h: float, duration_ms: int
) -> tuple[float, float]:
    """(grams captured, rate at the end) ramping from ``rate_from`` to ``target``."""
    hours = duration_ms / HOUR_MS
    gap = target - rate_from
    ramp_h = min(hours, abs(gap) / ramp_per_h) if gap else 0.0
    rate_after_ramp = rate_from + (ramp_per_h * ramp_h if gap > 0 else -ramp_per_h * ramp_h)
    ramp_part = (rate_from + rate_after_ramp) / 2 * ramp_h
    return ramp_part + rate_after_ramp * (hours - ramp_h), rate_after_ramp
