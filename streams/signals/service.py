"""`llcr signals run`: the eco tier and intensity context on the signals topic, and an HTTP
API for routing and follow-the-sun on the request path.

The service consumes ``grid.intensity`` and keeps, per zone, the newest revision of every
hourly period of the average signal (in the configured variant) and of the marginal one.

* Each new measured/estimated hour of the average signal moves the zone's
  :class:`~streams.signals.core.EcoTier`; the decision is published (``eco_mode``) with its
  reason, hourly and on every change. A zone without fresh intensity (older than
  ``stale_after_h``) is published as ``unknown``.
* When both signals exist for a zone-hour, an ``intensity_context`` signal gives both
  and their ratio.
* ``POST /v1/route`` ranks candidates (:func:`~streams.signals.core.rank`) with the
  zones' fresh intensity and publishes the decision (``routing_decision``) with the
  expected carbon saved against the lowest-latency candidate, so its effect can be audited
  in ClickHouse. ``POST /v1/follow-the-sun`` and ``GET /v1/eco/{zone}`` answer from the
  same state. Errors are 4xx with ``{"error": ...}``; nothing is guessed.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from schemas.clock import parse_time_ms
from schemas.records import CarbonSignal, GridIntensityEvent
from schemas.units import HOUR_MS
from streams.jsonhttp import Reply, error, json_body
from streams.settings import SignalsSettings
from streams.signals.core import (
    Candidate,
    EcoDecision,
    EcoPolicy,
    EcoTier,
    FlexibleJob,
    Ranked,
    SignalInputError,
    Weights,
    follow_the_sun,
    rank,
)

logger = logging.getLogger(__name__)


@dataclass
class ZoneState:
    tier: EcoTier
    average: dict[int, tuple[int, float, str]] = field(default_factory=dict)  # hour -> rev, g, kind
    marginal: dict[int, tuple[int, float]] = field(default_factory=dict)
    last: EcoDecision | None = None


class Signals:
    """State and decisions; thread-safe (the HTTP API reads while the consumer writes)."""

    def __init__(
        self,
        settings: SignalsSettings,
        *,
        clock_ms: Callable[[], int],
        publish: Callable[[CarbonSignal], None],
    ) -> None:
        self.settings = settings
        self.clock_ms = clock_ms
        self.publish = publish
        self.policy = EcoPolicy(
            window_h=settings.window_h,
            enter_pct=settings.enter_pct,
            leave_pct=settings.leave_pct,
            enter_g=settings.enter_g,
            leave_g=settings.leave_g,
            min_dwell_h=settings.min_dwell_h,
            min_history_h=settings.min_history_h,
            stale_after_h=settings.stale_after_h,
        )
        self.zones: dict[str, ZoneState] = {}
        self._lock = threading.Lock()

    # -- intensity in -------------------------------------------------------------------

    def on_intensity(self, event: GridIntensityEvent) -> None:
        if event["period_end_ms"] - event["period_start_ms"] != HOUR_MS:
            return  # the tier works on hourly periods (sub-hourly providers: documented)
        with self._lock:
            zone = self.zones.setdefault(
                event["zone"], ZoneState(EcoTier(event["zone"], self.policy))
            )
            hour, value = event["period_start_ms"], event["intensity_g_per_kwh"]
            if event["signal"] == "marginal":
                if zone.marginal.get(hour, (-1, 0.0))[0] < event["revision"]:
                    zone.marginal[hour] = (event["revision"], value)
                    self._context(event["zone"], zone, hour)
                return
            if event["variant"] != self.settings.variant:
                return
            if zone.average.get(hour, (-1, 0.0, ""))[0] >= event["revision"]:
                return
            zone.average[hour] = (event["revision"], value, event["kind"])
            self._context(event["zone"], zone, hour)
            fresh = event["kind"] != "forecast"
            if fresh and (zone.tier.last_at_ms is None or hour > zone.tier.last_at_ms):
                decision = zone.tier.observe(hour, value)
                zone.last = decision
                self.publish(self._eco_signal(decision))
            self._trim(zone)

    def _trim(self, zone: ZoneState) -> None:
        horizon = (zone.tier.last_at_ms or 0) - (self.policy.window_h + 24 * 8) * HOUR_MS
        for series in (zone.average, zone.marginal):
            for hour in [h for h in series if h < horizon]:
                del series[hour]

    def _context(self, name: str, zone: ZoneState, hour: int) -> None:
        if hour not in zone.average or hour not in zone.marginal:
            return
        average, marginal = zone.average[hour][1], zone.marginal[hour][1]
        payload = {"average_g_per_kwh": average, "marginal_g_per_kwh": marginal}
        if average > 0:
            payload["marginal_over_average"] = marginal / average
        self.publish(
            {
                "signal_id": f"context:{name}:{hour}",
                "kind": "intensity_context",
                "zone": name,
                "mode": None,
                "intensity_g_per_kwh": average,
                "percentile": None,
                "reason": f"marginal {marginal:.0f} vs average {average:.0f} g/kWh",
                "valid_from_ms": hour,
                "valid_until_ms": hour + HOUR_MS,
                "payload_json": json.dumps(payload),
                "issued_at_ms": self.clock_ms(),
            }
        )

    def _eco_signal(self, d: EcoDecision) -> CarbonSignal:
        return {
            "signal_id": f"eco:{d.zone}:{d.at_ms}:{d.mode}",
            "kind": "eco_mode",
            "zone": d.zone,
            "mode": d.mode,
            "intensity_g_per_kwh": d.intensity_g_per_kwh,
            "percentile": d.percentile,
            "reason": d.reason,
            "valid_from_ms": d.at_ms,
            "valid_until_ms": None,
            "payload_json": json.dumps({"changed": d.changed}),
            "issued_at_ms": self.clock_ms(),
        }

    def check_stale(self) -> None:
        now = self.clock_ms()
        with self._lock:
            for zone in self.zones.values():
                if zone.last is not None and zone.last.mode == "unknown":
                    continue
                decision = zone.tier.stale(now)
                if decision is not None:
                    zone.last = decision
                    self.publish(self._eco_signal(decision))

    # -- answers ------------------------------------------------------------------------

    def fresh_intensity(self) -> dict[str, float]:
        now = self.clock_ms()
        limit = self.policy.stale_after_h * HOUR_MS
        found = {}
        for name, zone in self.zones.items():
            at = zone.tier.last_at_ms
            if at is not None and now - at <= limit:
                found[name] = zone.average[at][1]
        return found

    def eco(self, zone: str) -> dict[str, Any]:
        with self._lock:
            state = self.zones.get(zone)
            if state is None:
                raise KeyError(zone)
            stale = state.tier.stale(self.clock_ms())
            decision = stale or state.last
        if decision is None:
            return {"zone": zone, "mode": "unknown", "reason": "no decision yet"}
        return {k: v for k, v in asdict(decision).items() if k != "changed"}

    def route(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            candidates = [
                Candidate(str(c["node"]), str(c["zone"]), float(c["latency_ms"]))
                for c in request["candidates"]
            ]
            weights = Weights(**request.get("weights", {}))
            energy = float(request.get("energy_kwh", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise SignalInputError(f"malformed request: {exc}") from None
        limit = self.settings.max_route_candidates
        if len(candidates) > limit:
            raise SignalInputError(f"{len(candidates)} candidates: at most {limit} a request")
        with self._lock:
            intensity = self.fresh_intensity()
        ranked = rank(candidates, intensity, weights)
        fastest = min(ranked, key=lambda r: (r.latency_ms, r.node))
        chosen = ranked[0]
        saved = (fastest.intensity_g_per_kwh - chosen.intensity_g_per_kwh) * energy
        decision_id = str(uuid.uuid4())
        answer = {
            "decision_id": decision_id,
            "chosen": _ranked(chosen),
            "ranked": [_ranked(r) for r in ranked],  # not asdict(): 10x slower here
            "excluded_by_slo": len(candidates) - len(ranked),
            "baseline": _ranked(fastest),
            "expected_saved_g": saved,
        }
        self.publish(
            {
                "signal_id": f"route:{decision_id}",
                "kind": "routing_decision",
                "zone": chosen.zone,
                "mode": None,
                "intensity_g_per_kwh": chosen.intensity_g_per_kwh,
                "percentile": None,
                "reason": f"{chosen.node} over {fastest.node}: {saved:.3f} g saved",
                "valid_from_ms": self.clock_ms(),
                "valid_until_ms": None,
                "payload_json": json.dumps(
                    {"request": request, "chosen": answer["chosen"], "expected_saved_g": saved}
                ),
                "issued_at_ms": self.clock_ms(),
            }
        )
        return answer

    def follow_the_sun(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            zones = tuple(str(z) for z in request["zones"])
            job = FlexibleJob(
                energy_kwh=float(request["energy_kwh"]),
                duration_h=int(request["duration_h"]),
                earliest_start_ms=parse_time_ms(str(request["earliest_start"])),
                deadline_ms=parse_time_ms(str(request["deadline"])),
                zones=zones,
                home_zone=str(request.get("home_zone", zones[0] if zones else "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise SignalInputError(f"malformed request: {exc}") from None
        self._check_work(job)
        with self._lock:  # a copy of the zones asked for; the work happens outside
            known = {
                name: dict(self.zones[name].average) for name in job.zones if name in self.zones
            }
        series, basis = _series(job, known)
        answer = follow_the_sun(job, series, self.clock_ms())
        best = answer.best
        return {
            "zone": best.zone,
            "start": _iso(best.start_ms),
            "expected_g": best.emissions_g,
            "now_at_home_g": answer.now_at_home.emissions_g if answer.now_at_home else None,
            "expected_saving_g": answer.saving_g,
            "basis": basis,
            "windows_considered": answer.candidates,
        }

    def _check_work(self, job: FlexibleJob) -> None:
        """Refuse a request asking for more zones or hours than one request may."""
        settings = self.settings
        if len(job.zones) > settings.max_request_zones:
            raise SignalInputError(
                f"{len(job.zones)} zones: at most {settings.max_request_zones} a request"
            )
        horizon_h = (job.deadline_ms - job.earliest_start_ms) / HOUR_MS
        if horizon_h > settings.max_horizon_h:
            raise SignalInputError(
                f"earliest start to deadline is {horizon_h:.0f} h: at most "
                f"{settings.max_horizon_h} h a request"
            )

    # -- HTTP ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        try:
            if method == "GET" and path.startswith("/v1/eco/"):
                return Reply(200, self.eco(path.removeprefix("/v1/eco/")))
            if method == "POST" and path == "/v1/route":
                return Reply(200, self.route(_object(body)))
            if method == "POST" and path == "/v1/follow-the-sun":
                return Reply(200, self.follow_the_sun(_object(body)))
        except KeyError as exc:
            return error(404, f"unknown zone {exc.args[0]}")
        except (SignalInputError, ValueError) as exc:
            return error(422 if isinstance(exc, SignalInputError) else 400, str(exc))
        return error(404, "GET /v1/eco/{zone}, POST /v1/route, POST /v1/follow-the-sun")


def _series(
    job: FlexibleJob, zones: Mapping[str, Mapping[int, tuple[Any, float, str]]]
) -> tuple[dict[str, dict[int, float]], dict[str, str]]:
    """Hourly values per zone: forecasts and measurements as published; hours beyond
    them are filled from the same hour a week earlier (history), and say so."""
    series: dict[str, dict[int, float]] = {}
    basis: dict[str, str] = {}
    for name, average in zones.items():
        known = {h: v[1] for h, v in average.items()}
        hours = dict(known)
        filled = 0
        hour = job.earliest_start_ms // HOUR_MS * HOUR_MS
        while hour < job.deadline_ms:
            if hour not in hours and hour - 7 * 24 * HOUR_MS in known:
                hours[hour] = known[hour - 7 * 24 * HOUR_MS]
                filled += 1
            hour += HOUR_MS
        series[name] = hours
        has_forecast = any(v[2] == "forecast" for v in average.values())
        basis[name] = "history" if filled else ("forecast" if has_forecast else "measured")
    return series, basis


def _ranked(r: Ranked) -> dict[str, Any]:
    return {
        "node": r.node,
        "zone": r.zone,
        "latency_ms": r.latency_ms,
        "intensity_g_per_kwh": r.intensity_g_per_kwh,
        "score": r.score,
    }


def _object(body: bytes) -> Mapping[str, Any]:
    parsed = json_body(body)
    if not isinstance(parsed, dict):
        raise ValueError("body must be a JSON object")
    return parsed


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
