"""On-site capture for the removal service: which site-hours get a command, what the
commands are expected to remove, and telemetry turned into net capture in the ledger.

No I/O: the service hands it records and telemetry and publishes what it returns.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.records import CaptureCommand, CaptureTelemetry, LedgerEntry
from schemas.units import HOUR_MS, split_by_key
from streams.removal.capture import command_id, plan
from streams.removal.core import Book, RejectedError, SiteHour, to_mg
from streams.removal.stats import ActionStats
from streams.settings import ActionsSettings

logger = logging.getLogger(__name__)


@dataclass
class PendingCapture:
    command: CaptureCommand
    shares_mg: dict[str, int]  # expected net capture by scope


class CaptureDesk:
    """Plans capture for quiet site-hours and settles the telemetry of its commands."""

    def __init__(
        self,
        settings: ActionsSettings,
        book: Book,
        stats: ActionStats,
        clock_ms: Callable[[], int],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.book = book
        self.stats = stats
        self.clock_ms = clock_ms
        self.monotonic = monotonic
        self.commands: dict[str, PendingCapture] = {}
        self.captured: set[str] = set()  # command ids with telemetry in the ledger
        self.last_record_at: dict[tuple[str, int], float] = {}  # site-hour -> monotonic
        self.planned: set[tuple[str, int]] = set()
        self.rates: dict[str, float] = {}  # unit id -> last commanded rate
        self.running_since: dict[str, int] = {}  # unit id -> first hour of the current run

    # -- start --------------------------------------------------------------------------

    def recovered_command(self, command: CaptureCommand) -> None:
        """A command issued before a restart (read back from its topic)."""
        self.remember(command)
        self.planned.add((command["site"], command["hour_start_ms"]))

    def recovered_delivery(self, command: str) -> None:
        """A command whose telemetry the ledger already holds."""
        self.captured.add(command)

    # -- planning -----------------------------------------------------------------------

    def saw_record(self, site: str, hour_ms: int) -> None:
        """An emission record of this site-hour arrived (planning waits until it is quiet)."""
        self.last_record_at[(site, hour_ms)] = self.monotonic()

    def plan(self, now: int) -> list[CaptureCommand]:
        """Commands for the site-hours whose records went quiet, once per site-hour."""
        quiet = self.monotonic() - self.settings.plan_quiet_s
        window = self.settings.capture_window_h * HOUR_MS
        commands = []
        for (site_name, hour), last in sorted(self.last_record_at.items()):
            if last > quiet or (site_name, hour) in self.planned:
                continue
            site = self.book.sites.get((site_name, hour))
            unit = self.settings.capture_units.get(site_name)
            self.planned.add((site_name, hour))
            if site is None or unit is None or now > hour + HOUR_MS + window:
                continue
            command = self._command(unit.unit_id, site, now)
            if command is not None:
                commands.append(command)
        return commands

    def _command(self, unit_id: str, site: SiteHour, now: int) -> CaptureCommand | None:
        unit = self.settings.capture_units[site.site]
        previous = self.rates.get(unit_id, 0.0)
        decision = plan(
            unit,
            it_energy_kwh=site.energy_kwh,
            obligation_g=site.obligation_mg / 1000,
            intensity_g_per_kwh=site.intensity_g_per_kwh,
            previous_rate_g_per_h=previous,
            running_h=(site.hour_ms - self.running_since.get(unit_id, site.hour_ms)) / HOUR_MS,
        )
        if decision.action == "stop" and previous == 0.0:
            logger.info("no capture at %s for %d: %s", site.site, site.hour_ms, decision.reason)
            return None
        command: CaptureCommand = {
            "command_id": command_id(site.site, unit_id, site.hour_ms),
            "site": site.site,
            "unit_id": unit_id,
            "hour_start_ms": site.hour_ms,
            "action": decision.action,
            "target_rate_g_per_h": decision.target_rate_g_per_h,
            "expected_capture_g": decision.expected_capture_g,
            "expected_parasitic_g": decision.expected_parasitic_g,
            "intensity_g_per_kwh": site.intensity_g_per_kwh,
            "reason": decision.reason,
            "issued_at_ms": now,
        }
        self.rates[unit_id] = decision.target_rate_g_per_h
        if decision.target_rate_g_per_h <= 0:
            self.running_since.pop(unit_id, None)
        else:
            self.running_since.setdefault(unit_id, site.hour_ms)
        self.remember(command)
        self.stats.commands += 1
        return command

    def remember(self, command: CaptureCommand) -> None:
        site = self.book.sites.get((command["site"], command["hour_start_ms"]))
        net = to_mg(command["expected_capture_g"] - command["expected_parasitic_g"])
        shares = split_by_key(net, site.scope_mg if site else {})
        self.commands[command["command_id"]] = PendingCapture(command, shares)

    def pending_mg(self, scope: str, now: int) -> int:
        """Net capture expected for ``scope`` from commands without telemetry yet."""
        expire = (self.settings.capture_window_h + 1) * HOUR_MS
        return sum(
            p.shares_mg.get(scope, 0)
            for cid, p in self.commands.items()
            if cid not in self.captured and now <= p.command["issued_at_ms"] + expire
        )

    # -- telemetry ----------------------------------------------------------------------

    def on_telemetry(self, t: CaptureTelemetry) -> list[LedgerEntry]:
        """The ledger entries of one unit's telemetry: net capture (captured − electric ×
        the commanded hour's intensity) shared by the hour's scopes, or the parasitic
        emission when it emitted more than it captured. Raises :class:`RejectedError`."""
        self.stats.telemetry += 1
        unit = self.settings.capture_units.get(t["site"])
        if unit is None or unit.unit_id != t["unit_id"]:
            raise RejectedError("unknown_unit", f"no capture unit {t['unit_id']} at {t['site']}")
        pending = self.commands.get(t["command_id"] or "")
        if pending is None:
            raise RejectedError(
                "unknown_command", f"telemetry for unknown command {t['command_id']}"
            )
        hours = (t["period_end_ms"] - t["period_start_ms"]) / HOUR_MS
        most = unit.capacity_kg_per_h * 1000 * max(hours, 0) * 1.05
        if not (math.isfinite(t["captured_g"]) and 0 <= t["captured_g"] <= most):
            raise RejectedError(
                "absurd_capture", f"{t['captured_g']} g in {hours:.2f} h exceeds the unit"
            )
        command = pending.command
        parasitic = t["electric_kwh"] * command["intensity_g_per_kwh"]
        net_mg = to_mg(t["captured_g"] - parasitic)
        self.captured.add(command["command_id"])
        site = self.book.sites.get((command["site"], command["hour_start_ms"]))
        shares = split_by_key(net_mg, site.scope_mg if site else {})
        payload = {
            "command_id": command["command_id"],
            "unit_id": t["unit_id"],
            "site": t["site"],
            "served_hour_ms": command["hour_start_ms"],
            "captured_g": t["captured_g"],
            "parasitic_g": parasitic,
            "electric_kwh": t["electric_kwh"],
            "intensity_g_per_kwh": command["intensity_g_per_kwh"],
        }
        entries: list[LedgerEntry] = []
        if net_mg < 0 and site is not None:
            logger.warning(
                "capture %s emitted more than it captured: %s", t["telemetry_id"], payload
            )
            entries += self.book.record_parasitic(
                site, -net_mg / 1000, t["telemetry_id"], now_ms=self.clock_ms()
            )
        entries += self.book.record_removal(
            "capture_delivery",
            shares,
            t["telemetry_id"],
            removal_at_ms=t["period_end_ms"],
            payload=payload,
            now_ms=self.clock_ms(),
        )
        return entries
