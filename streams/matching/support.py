"""What the matching worker keeps beside faust: table keys, the price book over the
GlobalTable, its counters, the offsets the consumer delivered, and the core's policy and
factors made from the settings. Nothing here touches faust or Kafka."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from schemas.units import HOUR_MS
from streams.matching.core import Factors
from streams.matching.lifecycle import Policy
from streams.matching.prices import BINS, BookKey, Price
from streams.settings import WorkerSettings

logger = logging.getLogger("streams.matching.worker")  # its lines read as the worker's


def slice_key(host: str, hour_start_ms: int) -> bytes:
    return f"{host}|{hour_start_ms}".encode()


def book_key(key: BookKey) -> bytes:
    zone, signal, variant, hour = key
    return f"{zone}|{signal}|{variant}|{hour}".encode()


class TableBook:
    """The GlobalTable of prices behind the ``PriceSource`` seam."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: BookKey) -> list[Price | None] | None:
        value: list[Price | None] | None = self._table.get(book_key(key))
        return value

    def bins(self, zone: str, signal: str, variant: str, hour: int) -> list[Price | None]:
        return self.get((zone, signal, variant, hour)) or [None] * BINS


@dataclass
class MatchingStats:
    batches: int = 0
    samples: int = 0
    vectorised: int = 0  # of the samples, applied by arrays (streams.matching.columnar)
    duplicates: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    records: int = 0
    live: int = 0
    reread: int = 0  # seeks back to messages the consumer skipped


@dataclass
class OffsetTrack:
    """The samples offsets each partition delivered, to find ones the consumer skipped."""

    next_offset: dict[int, int] = field(default_factory=dict)
    missing: dict[int, set[int]] = field(default_factory=dict)
    sought_at: dict[int, float] = field(default_factory=dict)
    tries: dict[int, tuple[int, int]] = field(default_factory=dict)  # (offset, seeks)
    wait_s: float = 1.0  # between seeks of one partition: a seek takes a fetch to land
    max_tries: int = 5  # then the offsets are gone (retention): give up, loudly
    max_gap: int = 10_000  # a longer jump is an offset reset, not a skipped message

    def clear(self) -> None:
        """Forget every partition (a rebalance: each starts again from its commit)."""
        for offsets in (self.next_offset, self.missing, self.sought_at, self.tries):
            offsets.clear()

    def started(self, partition: int, offset: int) -> None:
        """The consumer reads ``partition`` from ``offset`` now (a seek to its committed
        offset): the next message must have it, and what was missing is read again."""
        self.next_offset[partition] = offset
        self.forget(partition)

    def hold(self, partition: int) -> int | None:
        """The highest offset of ``partition`` that may be committed: its first missing
        one (None: nothing missing). faust counts a skipped offset as done; committing
        past it would lose its samples to a crash before the re-read."""
        offsets = self.missing.get(partition)
        return min(offsets) if offsets else None

    def saw(self, partition: int, offset: int) -> None:
        expected = self.next_offset.get(partition)
        if expected is not None and offset - expected > self.max_gap:
            logger.error(
                "samples partition %d jumped from offset %d to %d (reset past retention?)",
                partition,
                expected,
                offset,
            )
        elif expected is not None and offset > expected:
            self.missing.setdefault(partition, set()).update(range(expected, offset))
        elif partition in self.missing:
            self.missing[partition].discard(offset)
            if not self.missing[partition]:
                del self.missing[partition]
        if expected is None or offset >= expected:
            self.next_offset[partition] = offset + 1

    def due(self, now: float) -> list[tuple[int, int]]:
        """(partition, first missing offset) to seek to now."""
        out = []
        for partition, offsets in list(self.missing.items()):
            if now - self.sought_at.get(partition, -self.wait_s) < self.wait_s:
                continue
            first = min(offsets)
            last_first, seeks = self.tries.get(partition, (first, 0))
            seeks = seeks + 1 if last_first == first else 1
            if seeks > self.max_tries:
                logger.error(
                    "samples partition %d: offsets %d.. still unread after %d seeks; given up",
                    partition,
                    first,
                    self.max_tries,
                )
                self.forget(partition)
                continue
            self.tries[partition] = (first, seeks)
            self.sought_at[partition] = now
            out.append((partition, first))
        return out

    def forget(self, partition: int) -> None:
        self.missing.pop(partition, None)
        self.tries.pop(partition, None)


def factors_of(settings: WorkerSettings) -> Factors:
    return Factors(
        pue=settings.pue,
        wue_l_per_kwh=settings.wue_l_per_kwh,
        embodied_g_per_gpu_hour=settings.embodied_g_per_gpu_hour,
        default_pue=settings.default_pue,
        default_wue_l_per_kwh=settings.default_wue_l_per_kwh,
        average_variant=settings.average_variant,
    )


def policy_of(settings: WorkerSettings) -> Policy:
    hour_ms = HOUR_MS
    max_age = settings.max_sample_age_h
    return Policy(
        bounds=settings.bounds.to_bounds(),
        grace_ms=int(settings.grace_s * 1000),
        max_wait_ms=int(settings.max_wait_s * 1000),
        live_every_ms=int(settings.live_every_s * 1000),
        retention_ms=int(settings.retention_h * hour_ms),
        unpriced_retention_ms=int(settings.unpriced_retention_h * hour_ms),
        max_age_ms=None if max_age is None else int(max_age * hour_ms),
    )
