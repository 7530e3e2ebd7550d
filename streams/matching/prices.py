"""The intensity book of the matching core: which event prices each 5-minute bin.

For every (zone, signal, variant, bin) the covering event with the greatest
(revision, published_at_ms, event_id) wins. That is a max, so arrival order does not
matter, and a revision (a higher number) replaces what it revises. Intensity periods of
every provider start and end on 5-minute boundaries (EM 60 min, NESO 30 min, WattTime
5 min), so intensity is constant inside a bin; periods that are not aligned are refused.
No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from schemas.errors import RejectedInputError
from schemas.records import GridIntensityEvent, Signal, Variant
from schemas.units import HOUR_MS

BIN_MS = 300_000
BINS = HOUR_MS // BIN_MS


@dataclass(frozen=True)
class Price:
    """The intensity chosen for one bin, and the event it came from."""

    order: tuple[int, int, str]  # (revision, published_at_ms, event_id): the greatest wins
    value: float
    event_id: str
    provider: str
    estimated: bool


class UnalignedPeriodError(RejectedInputError):
    """An intensity period that does not start and end on 5-minute boundaries."""


class AbsurdIntensityError(RejectedInputError):
    """An intensity value no grid can have, or a period longer than any provider's."""


def check_event(event: GridIntensityEvent, ceiling_g_per_kwh: float, max_period_ms: int) -> None:
    """Refuse what physics rules out before it can price anything: a value that is not
    finite, negative or above the ceiling, or a period longer than ``max_period_ms``
    (which would otherwise make the worker write a bin per 5 minutes of it)."""
    value = event["intensity_g_per_kwh"]
    if not math.isfinite(value):
        raise AbsurdIntensityError("intensity_not_finite", f"intensity {value} g/kWh")
    if value < 0:
        raise AbsurdIntensityError("intensity_negative", f"intensity {value} g/kWh")
    if value > ceiling_g_per_kwh:
        raise AbsurdIntensityError(
            "intensity_above_ceiling",
            f"intensity {value} g/kWh is above the ceiling of {ceiling_g_per_kwh} g/kWh",
        )
    length = event["period_end_ms"] - event["period_start_ms"]
    if length > max_period_ms:
        raise AbsurdIntensityError(
            "period_too_long",
            f"a period of {length / 3.6e6:.1f} h (at most {max_period_ms / 3.6e6:.0f} h)",
        )


BookKey = tuple[str, str, str, int]  # zone, signal, variant, hour start
SIGNAL_VARIANTS: tuple[tuple[Signal, Variant], ...] = (
    ("average", "direct"),
    ("average", "lifecycle"),
    ("marginal", "direct"),
    ("marginal", "lifecycle"),
)


def price_of(event: GridIntensityEvent) -> Price:
    return Price(
        (event["revision"], event["published_at_ms"], event["event_id"]),
        event["intensity_g_per_kwh"],
        event["event_id"],
        event["provider"],
        event["kind"] != "measured",
    )


def merge_event(
    current: Callable[[BookKey], list[Price | None] | None], event: GridIntensityEvent
) -> dict[BookKey, list[Price | None]]:
    """The hours whose bins an event changes, with their new bins (the inputs untouched).

    ``current(key)`` gives an hour's bins as they are. Raises
    :class:`UnalignedPeriodError` for periods off the 5-minute grid.
    """
    start, end = event["period_start_ms"], event["period_end_ms"]
    if start % BIN_MS or end % BIN_MS or end <= start:
        raise UnalignedPeriodError(
            "unaligned_period", f"period {start}..{end} is not on 5-minute boundaries (or is empty)"
        )
    price = price_of(event)
    changed: dict[BookKey, list[Price | None]] = {}
    for bin_start in range(start, end, BIN_MS):
        hour = bin_start - bin_start % HOUR_MS
        key = (event["zone"], event["signal"], event["variant"], hour)
        if key not in changed:
            changed[key] = list(current(key) or [None] * BINS)
        bins = changed[key]
        slot = (bin_start - hour) // BIN_MS
        if bins[slot] is None or price.order > bins[slot].order:  # type: ignore[union-attr]
            bins[slot] = price
    return {k: v for k, v in changed.items() if v != (current(k) or [None] * BINS)}


class PriceSource(Protocol):
    def bins(self, zone: str, signal: str, variant: str, hour: int) -> list[Price | None]: ...


def intensity_version(book: PriceSource, zone: str, hour: int) -> tuple[str | None, ...]:
    """What prices an hour of a zone (every signal and variant): changes when any does."""
    return tuple(
        p.event_id if p else None
        for signal, variant in SIGNAL_VARIANTS
        for p in book.bins(zone, signal, variant, hour)
    )


@dataclass
class IntensityBook:
    """Intensity per (zone, signal, variant, hour): 12 bins, each the winning event."""

    hours: dict[BookKey, list[Price | None]] = field(default_factory=dict)

    def apply(self, event: GridIntensityEvent) -> list[tuple[str, int]]:
        """Take an event; return the (zone, hour_start) whose pricing changed."""
        changed = merge_event(self.hours.get, event)
        self.hours.update(changed)
        return sorted({(key[0], key[3]) for key in changed})

    def bins(self, zone: str, signal: str, variant: str, hour: int) -> list[Price | None]:
        return self.hours.get((zone, signal, variant, hour), [None] * BINS)
