"""Revision numbers and idempotent publishing (pure, plus JSON load/save).

One entry per (zone, signal, variant, period start): the value last published, its
kind, provider and revision. An observation becomes an event only when it changes
something:

* a new period: revision 0;
* the same provider with a new value or kind (estimated -> measured, forecast ->
  measured): revision + 1;
* a provider earlier in the zone's chain (more trusted) replacing a fallback's value:
  revision + 1;
* a fallback provider never replaces a more trusted provider's value, and the same value
  again is nothing new (idempotent: no event);
* a fill (``agents.grid.repair``: an estimate for a missing or implausible period) never
  replaces a provider's value, and a provider's value replaces a fill.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from agents.grid.model import Observation
from agents.grid.repair import is_fill
from schemas.records import GridIntensityEvent

Key = tuple[str, str, str, int]  # zone, signal, variant, period start


@dataclass(frozen=True)
class Entry:
    revision: int
    value: float
    kind: str
    provider: str
    rank: int
    end_ms: int


class RevisionLog:
    def __init__(self, entries: dict[Key, Entry] | None = None) -> None:
        self._entries: dict[Key, Entry] = dict(entries or {})

    def __len__(self) -> int:
        return len(self._entries)

    def observe(
        self, obs: Observation, *, rank: int, published_at_ms: int
    ) -> GridIntensityEvent | None:
        """The event to publish for ``obs`` (None when it changes nothing)."""
        key: Key = (obs.zone, obs.signal, obs.variant, obs.start_ms)
        old = self._entries.get(key)
        if old is not None and is_fill(obs.provider) and not is_fill(old.provider):
            return None  # an estimate never replaces a value a provider gave
        if old is None:
            revision = 0
        elif rank > old.rank:
            return None  # a fallback never overrides a more trusted provider
        elif (
            rank == old.rank
            and obs.provider == old.provider
            and (obs.value, obs.kind, obs.end_ms) == (old.value, old.kind, old.end_ms)
        ):
            return None  # nothing new: idempotent
        else:
            revision = old.revision + 1
        self._entries[key] = Entry(revision, obs.value, obs.kind, obs.provider, rank, obs.end_ms)
        return {
            "event_id": (
                f"{obs.provider}:{obs.zone}:{obs.signal}:{obs.variant}:{obs.start_ms}:{revision}"
            ),
            "zone": obs.zone,
            "period_start_ms": obs.start_ms,
            "period_end_ms": obs.end_ms,
            "intensity_g_per_kwh": obs.value,
            "signal": obs.signal,
            "variant": obs.variant,
            "provider": obs.provider,
            "kind": obs.kind,
            "estimation_method": obs.estimation_method,
            "revision": revision,
            "published_at_ms": published_at_ms,
        }

    def copy(self) -> RevisionLog:
        return RevisionLog(self._entries)

    def record(self, event: GridIntensityEvent, *, rank: int) -> None:
        """Remember ``event`` as published (for a log kept apart from :meth:`observe`, by
        a caller that publishes events later than it observes them)."""
        key: Key = (event["zone"], event["signal"], event["variant"], event["period_start_ms"])
        self._entries[key] = Entry(
            event["revision"],
            event["intensity_g_per_kwh"],
            event["kind"],
            event["provider"],
            rank,
            event["period_end_ms"],
        )

    def forget_before(self, start_ms: int) -> None:
        """Drop entries of periods that start before ``start_ms`` (bounds the state)."""
        self._entries = {k: v for k, v in self._entries.items() if k[3] >= start_ms}

    def save(self, path: Path) -> None:
        rows = [[*key, *vars(entry).values()] for key, entry in self._entries.items()]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> RevisionLog:
        if not path.exists():
            return cls()
        entries = {}
        for zone, signal, variant, start, revision, value, kind, provider, rank, end in json.loads(
            path.read_text()
        ):
            entries[(zone, signal, variant, int(start))] = Entry(
                int(revision), float(value), kind, provider, int(rank), int(end)
            )
        return cls(entries)
