"""Removal accounting (pure, no I/O): obligations, capture planning, FIFO allocation.

Quantities are integer milligrams inside (the ledger shows grams), so sums are exact.

* An emission record (final or revised) adds ``emissions × (1 + buffer)`` to the
  obligation of its scope-hour; a revision adds the difference, up or down.
* Priced or owed: energy the record could not price (no intensity, or only part of the
  hour priced) is never 0 g. It is owed at a conservative estimate
  (:attr:`Policy.unpriced_g_per_kwh`, never below the hour's own priced intensity), the
  ledger entry says how much is estimated, and the revision that prices it moves the
  obligation to the measured value.
* Removals (net capture telemetry, retired credits) enter a per-scope pool of lots.
* :meth:`Book.allocate` moves pooled removal to the earliest unmatched hour of the scope
  first, and releases what a downward revision left over-covered back to the pool.

The :class:`Book` is a fold of the ledger: :meth:`Book.apply` of every entry, in order,
rebuilds it exactly, so a restarted service reads the ledger and goes on.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from schemas.errors import RejectedInputError
from schemas.records import EmissionHour, LedgerEntry, LedgerKind
from schemas.units import HOUR_MS, split_by_key
from streams.removal.ledger import Chain

MG_PER_G = 1000
ScopeMode = Literal["tenant", "site"]


class RejectedError(RejectedInputError):
    """Input that must not be settled; ``code`` is the dead-letter reason code."""


def to_g(mg: int) -> float:
    return mg / MG_PER_G


def to_mg(grams: float) -> int:
    return round(grams * MG_PER_G)


def quarter_end_ms(hour_ms: int) -> int:
    """End of the calendar (fiscal) quarter that contains ``hour_ms``: the hard deadline."""
    t = datetime.fromtimestamp(hour_ms / 1000, UTC)
    first_month_next = (t.month - 1) // 3 * 3 + 4
    year = t.year + (first_month_next > 12)
    month = (first_month_next - 1) % 12 + 1
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass
class HourAccount:
    scope: str
    hour_ms: int
    obligation_mg: int = 0
    covered_mg: int = 0
    covered_at_ms: int | None = None  # when the ledger last made it fully covered

    @property
    def remaining_mg(self) -> int:
        return max(0, self.obligation_mg - self.covered_mg)

    @property
    def excess_mg(self) -> int:
        return max(0, self.covered_mg - self.obligation_mg)


@dataclass
class SiteHour:
    """What capture planning needs of one site-hour, from the recorded emissions."""

    site: str
    zone: str
    hour_ms: int
    energy_kwh: float = 0.0
    emissions_g: float = 0.0
    scope_mg: dict[str, int] = field(default_factory=dict)

    @property
    def obligation_mg(self) -> int:
        return sum(self.scope_mg.values())

    @property
    def intensity_g_per_kwh(self) -> float:
        """The emission-weighted intensity of the hour (the signal the emissions used)."""
        return self.emissions_g / self.energy_kwh if self.energy_kwh > 0 else 0.0


@dataclass(frozen=True)
class RecordState:
    """The last recorded obligation of one emission record (for its revisions)."""

    scope: str
    total_mg: int
    energy_kwh: float
    emissions_g: float


@dataclass
class Lot:
    ref_id: str
    remaining_mg: int
    at_ms: int  # when the removal happened (capture period end, credit retirement)


@dataclass(frozen=True)
class Policy:
    scope_mode: ScopeMode = "tenant"
    buffer: float = 0.1  # reversal-risk buffer on top of emissions
    include_embodied: bool = False
    latency_target_h: float = 24.0
    max_record_g: float = 1e9  # one record above a tonne-thousand is absurd
    # what unpriced energy is owed at, until its price arrives: above a grid run on
    # lignite alone (about 1,100 g/kWh over the life cycle), per zone where configured
    unpriced_g_per_kwh: float = 1200.0
    unpriced_zone_g_per_kwh: Mapping[str, float] = field(default_factory=dict)

    def unpriced_rate(self, zone: str) -> float:
        return self.unpriced_zone_g_per_kwh.get(zone, self.unpriced_g_per_kwh)


@dataclass(frozen=True)
class Obligation:
    """What one emission record owes, and on what basis (grams before the buffer)."""

    total_mg: int  # (priced + estimated [+ embodied]) x (1 + buffer)
    priced_g: float  # priced by intensity events (measured or the provider's estimates)
    estimated_g: float  # owed for unpriced energy at ``estimate_g_per_kwh``
    unpriced_kwh: float
    estimate_g_per_kwh: float


def scope_of(record: EmissionHour, mode: ScopeMode) -> str:
    return f"tenant:{record['tenant']}" if mode == "tenant" else f"site:{record['site']}"


def obligation_of(record: EmissionHour, policy: Policy) -> Obligation:
    """emissions × (1 + buffer) of one record, validated; its unpriced energy owed at the
    conservative estimate (see the module doc)."""
    priced = record.get("average")
    priced_g = priced["emissions_g"] if priced else 0.0
    fraction = priced["priced_fraction"] if priced else 0.0
    energy = record["energy_kwh"]
    for name, value in (("emissions", priced_g), ("energy", energy), ("priced share", fraction)):
        if not math.isfinite(value) or value < 0:
            raise RejectedError("negative_obligation", f"{name} of {value} cannot be an obligation")
    unpriced_kwh = energy * (1 - min(1.0, fraction))
    rate = policy.unpriced_rate(record["zone"])
    if priced and fraction > 0:  # never below what the hour's priced part shows
        rate = max(rate, priced["intensity_g_per_kwh"])
    estimated_g = unpriced_kwh * rate
    grams = priced_g + estimated_g + (record["embodied_g"] if policy.include_embodied else 0.0)
    if not math.isfinite(grams) or grams < 0:
        raise RejectedError(
            "negative_obligation", f"emissions of {grams} g cannot be an obligation"
        )
    if grams > policy.max_record_g:
        raise RejectedError("absurd_obligation", f"{grams:.0f} g in one GPU-hour is not plausible")
    return Obligation(to_mg(grams * (1 + policy.buffer)), priced_g, estimated_g, unpriced_kwh, rate)


class Book:
    """Obligations, pooled removal and coverage; a fold of the ledger (see module doc)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.chain = Chain()
        self.hours: dict[tuple[str, int], HourAccount] = {}
        self.sites: dict[tuple[str, int], SiteHour] = {}
        self.pool: dict[str, deque[Lot]] = {}
        self.records: dict[str, RecordState] = {}
        self.refs: set[str] = set()

    # -- the fold -----------------------------------------------------------------------

    def apply(self, entry: Mapping[str, Any]) -> None:
        """Fold one ledger entry into the state (entries must come in ``seq`` order)."""
        self.chain.follow(entry)
        kind: LedgerKind = entry["kind"]
        scope, payload = str(entry["scope"]), json.loads(entry["payload_json"])
        mg = to_mg(float(entry["quantity_g"]))
        self.refs.add(str(entry["ref_id"]))
        if kind in ("emission_hour", "emission_revision"):
            self._apply_emission(entry, scope, mg, payload)
        elif kind in ("capture_delivery", "credit_retirement"):
            lots = self.pool.setdefault(scope, deque())
            lots.append(Lot(str(entry["ref_id"]), mg, int(payload["removal_at_ms"])))
        elif kind == "allocation":
            self._apply_allocation(entry, scope, mg, payload)

    def _apply_emission(
        self, entry: Mapping[str, Any], scope: str, mg: int, payload: dict[str, Any]
    ) -> None:
        hour = int(entry["hour_start_ms"])
        account = self._account(scope, hour)
        account.obligation_mg += mg
        if account.remaining_mg > 0:
            account.covered_at_ms = None
        site = self.sites.setdefault(
            (payload["site"], hour), SiteHour(payload["site"], payload["zone"], hour)
        )
        # capture planning sees the estimate for unpriced energy too (conservative)
        grams = payload["emissions_g"] + payload.get("estimated_g", 0.0)
        now = RecordState(scope, payload["total_mg"], payload["energy_kwh"], grams)
        before = self.records.get(payload["record_id"], RecordState(scope, 0, 0.0, 0.0))
        site.energy_kwh += now.energy_kwh - before.energy_kwh
        site.emissions_g += now.emissions_g - before.emissions_g
        site.scope_mg[scope] = site.scope_mg.get(scope, 0) + mg
        self.records[payload["record_id"]] = now

    def _apply_allocation(
        self, entry: Mapping[str, Any], scope: str, mg: int, payload: dict[str, Any]
    ) -> None:
        account = self._account(scope, int(entry["hour_start_ms"]))
        account.covered_mg += mg
        lots = self.pool.setdefault(scope, deque())
        if mg >= 0:
            lots[0].remaining_mg -= mg
            if lots[0].remaining_mg == 0:
                lots.popleft()
        else:  # a release after a downward revision goes back to the pool as a lot
            lots.append(Lot(str(entry["ref_id"]), -mg, int(payload["removal_at_ms"])))
        if account.obligation_mg > 0 and account.remaining_mg == 0:
            if account.covered_at_ms is None:
                account.covered_at_ms = int(entry["recorded_at_ms"])
        else:
            account.covered_at_ms = None

    def _account(self, scope: str, hour: int) -> HourAccount:
        return self.hours.setdefault((scope, hour), HourAccount(scope, hour))

    def _append(
        self,
        kind: LedgerKind,
        scope: str,
        mg: int,
        ref_id: str,
        *,
        hour_ms: int | None,
        payload: Mapping[str, Any],
        now_ms: int,
    ) -> LedgerEntry:
        entry = self.chain.append(
            kind,
            scope,
            to_g(mg),
            ref_id,
            hour_start_ms=hour_ms,
            payload=payload,
            recorded_at_ms=now_ms,
        )
        self.apply(entry)
        return entry

    # -- events -------------------------------------------------------------------------

    def record_emission(self, record: EmissionHour, now_ms: int) -> list[LedgerEntry]:
        """Ledger the record's obligation (or the change a revision makes); once per revision."""
        ref = f"{record['record_id']}:{record['revision']}"
        if ref in self.refs:
            return []
        owed = obligation_of(record, self.policy)
        total = owed.total_mg
        scope, hour = scope_of(record, self.policy.scope_mode), record["hour_start_ms"]
        before = self.records.get(record["record_id"])
        if before is not None and before.scope != scope:
            raise RejectedError("scope_changed", f"record {record['record_id']} moved scope")
        delta = total - (before.total_mg if before else 0)
        priced = record.get("average")
        payload = {
            "record_id": record["record_id"],
            "revision": record["revision"],
            "status": record["status"],
            "site": record["site"],
            "zone": record["zone"],
            "job_id": record["job_id"],
            "energy_kwh": record["energy_kwh"],
            "emissions_g": owed.priced_g,
            # priced or owed: what of it is an estimate for energy no intensity priced
            "estimated_g": owed.estimated_g,
            "unpriced_kwh": owed.unpriced_kwh,
            "estimate_g_per_kwh": owed.estimate_g_per_kwh if owed.unpriced_kwh else None,
            "buffer": self.policy.buffer,
            "total_mg": total,
            "intensity_event_ids": priced["intensity_event_ids"] if priced else [],
        }
        kind: LedgerKind = "emission_hour" if before is None else "emission_revision"
        return [self._append(kind, scope, delta, ref, hour_ms=hour, payload=payload, now_ms=now_ms)]

    def record_parasitic(
        self, site: SiteHour, excess_g: float, ref_id: str, *, now_ms: int
    ) -> list[LedgerEntry]:
        """Capture that emitted more than it captured (e.g. ramping down in a dirty hour):
        the excess is an emission of the served hour, split over its scopes."""
        total = to_mg(excess_g * (1 + self.policy.buffer))
        entries = []
        for scope, mg in sorted(split_by_key(total, site.scope_mg).items()):
            ref = f"{ref_id}:{scope}"
            if ref in self.refs:
                continue
            payload = {
                "record_id": ref,
                "source": "capture_parasitic",
                "site": site.site,
                "zone": site.zone,
                "energy_kwh": 0.0,
                "emissions_g": mg / MG_PER_G / (1 + self.policy.buffer),
                "buffer": self.policy.buffer,
                "total_mg": mg,
            }
            entries.append(
                self._append(
                    "emission_hour",
                    scope,
                    mg,
                    ref,
                    hour_ms=site.hour_ms,
                    payload=payload,
                    now_ms=now_ms,
                )
            )
        return entries

    def record_removal(
        self,
        kind: Literal["capture_delivery", "credit_retirement"],
        shares: Mapping[str, int],
        ref_id: str,
        *,
        removal_at_ms: int,
        payload: Mapping[str, Any],
        now_ms: int,
    ) -> list[LedgerEntry]:
        """Ledger a removal, split over scopes (mg), once per ``ref_id``."""
        entries = []
        for scope, mg in sorted(shares.items()):
            ref = f"{ref_id}:{scope}"
            if ref in self.refs or mg <= 0:
                continue
            body = {**payload, "removal_at_ms": removal_at_ms}
            entries.append(
                self._append(kind, scope, mg, ref, hour_ms=None, payload=body, now_ms=now_ms)
            )
        return entries

    def allocate(self, now_ms: int) -> list[LedgerEntry]:
        """Release over-coverage, then pair pooled lots with the earliest unmatched hours."""
        entries = []
        target_ms = round(self.policy.latency_target_h * HOUR_MS)
        for account in sorted(self.hours.values(), key=lambda a: (a.scope, a.hour_ms)):
            if account.excess_mg:
                ref = f"release:{account.scope}:{account.hour_ms}:{self.chain.next_seq}"
                payload = {"removal_at_ms": now_ms, "reason": "obligation revised down"}
                entries.append(
                    self._append(
                        "allocation",
                        account.scope,
                        -account.excess_mg,
                        ref,
                        hour_ms=account.hour_ms,
                        payload=payload,
                        now_ms=now_ms,
                    )
                )
        for scope, lots in sorted(self.pool.items()):
            for account in self.open_hours(scope):
                while lots and account.remaining_mg:
                    lot = lots[0]
                    take = min(lot.remaining_mg, account.remaining_mg)
                    hour_end = account.hour_ms + HOUR_MS
                    payload = {
                        "removal_at_ms": lot.at_ms,
                        "within_target": now_ms <= hour_end + target_ms,
                    }
                    entries.append(
                        self._append(
                            "allocation",
                            scope,
                            take,
                            lot.ref_id,
                            hour_ms=account.hour_ms,
                            payload=payload,
                            now_ms=now_ms,
                        )
                    )
                if not lots:
                    break
        return entries

    # -- questions ----------------------------------------------------------------------

    def open_hours(self, scope: str) -> Iterator[HourAccount]:
        """The scope's hours with uncovered obligation, earliest first."""
        accounts = [a for a in self.hours.values() if a.scope == scope and a.remaining_mg]
        yield from sorted(accounts, key=lambda a: a.hour_ms)

    def scopes(self) -> set[str]:
        return {a.scope for a in self.hours.values()}

    def uncovered_mg(self, scope: str) -> int:
        return sum(a.remaining_mg for a in self.open_hours(scope))

    def pooled_mg(self, scope: str) -> int:
        return sum(lot.remaining_mg for lot in self.pool.get(scope, ()))
