"""Plain values of the grid feeder (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.records import IntensityKind, Signal, Variant


def iso(ms: int) -> str:
    """Epoch milliseconds as a readable UTC time, for messages."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class Observation:
    """One provider value for one zone and period [start_ms, end_ms), before validation."""

    zone: str
    start_ms: int
    end_ms: int
    value: float  # gCO2e/kWh
    signal: Signal
    variant: Variant
    provider: str
    kind: IntensityKind
    estimation_method: str | None = None
    raw: str = ""  # the input it came from (a CSV line, a JSON item), for dead letters

    @property
    def series(self) -> tuple[str, Signal, Variant]:
        return (self.zone, self.signal, self.variant)


@dataclass(frozen=True)
class Problem:
    """A rejected input: a stable reason code, a sentence, and the input itself."""

    code: str  # negative | not_a_number | above_ceiling | empty_period | unknown_zone |
    # conflicting_duplicate | duplicate | bad_row | gap | provider_error
    reason: str
    raw: str = ""
    zone: str | None = None


@dataclass(frozen=True)
class Gap:
    """A hole in a series: no value for [start_ms, end_ms). Reported, never filled."""

    zone: str
    signal: Signal
    variant: Variant
    start_ms: int
    end_ms: int
