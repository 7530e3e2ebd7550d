"""`llcr up`'s live view: what the running pipeline does, on one screen.

:class:`LiveView` folds the records of the pipeline's own topics (sample batches,
provisional and final emissions, signals) and the removal figures the sink's store answers
into a :class:`Snapshot`. It is pure: the caller feeds it, with the time. :func:`render`
draws a snapshot with rich (a terminal); :func:`status_line` writes it as one line (a log,
a pipe, CI).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from schemas.records import CarbonSignal, EmissionHour, GpuSampleBatch, LiveEmission
from schemas.topics import TopicKey

# what the view follows
TOPICS: tuple[TopicKey, ...] = ("samples", "emissions_live", "emissions_hourly", "signals")


@dataclass(frozen=True)
class Removal:
    """Removal so far, from the store (grams)."""

    obligation_g: float = 0.0
    removed_g: float = 0.0
    covered_hours: int = 0
    scope_hours: int = 0
    captured_g: float = 0.0
    credits_retired_g: float = 0.0
    orders: int = 0
    by_hour: dict[int, tuple[float, float]] = field(default_factory=dict)  # obligation, removed
    # priced or owed: scope-hours whose obligation holds an estimate for unpriced energy
    estimated_hours: int = 0
    estimated_g: float = 0.0
    unpriced_kwh: float = 0.0

    def priced_text(self) -> str:
        if not self.estimated_hours:
            return "every kWh priced"
        return (
            f"{self.estimated_hours} scope-hour(s) owed on estimates: {self.unpriced_kwh:,.3f} "
            f"kWh unpriced, {self.estimated_g:,.0f} g at the conservative rate until priced"
        )

    @property
    def debt_g(self) -> float:
        return self.obligation_g - self.removed_g


@dataclass(frozen=True)
class HostRow:
    host: str
    zone: str
    gpus: int
    samples: int
    samples_per_s: float
    newest_ms: int  # newest sample end (event time)
    open_hour_ms: int | None
    open_kwh: float
    open_g: float | None


@dataclass(frozen=True)
class HourRow:
    hour_start_ms: int
    zones: str  # comma-separated
    hosts: int
    energy_kwh: float
    emissions_g: float | None  # None: no intensity yet
    revised: bool


@dataclass(frozen=True)
class Snapshot:
    hosts: list[HostRow]
    samples_per_s: float
    open_hours: int
    final_hours: list[HourRow]  # newest first
    finals: int  # hourly records received (final and revised)
    removal: Removal | None
    eco: dict[str, str]  # zone -> "normal | eco | unknown (latest intensity)"


@dataclass
class _Host:
    zone: str = ""
    gpus: set[str] = field(default_factory=set)
    samples: int = 0
    newest_ms: int = 0
    recent: deque[tuple[float, int]] = field(default_factory=deque)  # (received at, samples)


@dataclass
class _Hour:
    """Latest record per record_id of one hour."""

    zones: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    records: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # kWh, g
    revised: bool = False


class LiveView:
    """The fold behind the view. ``keep_hours`` final hours are kept, the newest."""

    def __init__(self, *, rate_window_s: float = 5.0, keep_hours: int = 8) -> None:
        self.rate_window_s = rate_window_s
        self.keep_hours = keep_hours
        self._hosts: dict[str, _Host] = {}
        self._live: dict[str, LiveEmission] = {}  # newest provisional per record_id
        self._closed: set[tuple[str, int]] = set()  # (host, hour) with a final record
        self._hours: dict[int, _Hour] = {}
        self._finals = 0
        self._eco: dict[str, str] = {}
        self._intensity: dict[str, float] = {}
        self._removal: Removal | None = None

    def feed(self, topic_key: str, record: Any, now_s: float) -> None:
        """One decoded record of a topic the view follows (by catalogue key)."""
        if topic_key == "samples":
            self.on_samples(record, now_s)
        elif topic_key == "emissions_live":
            self.on_live(record)
        elif topic_key == "emissions_hourly":
            self.on_hourly(record)
        elif topic_key == "signals":
            self.on_signal(record)

    def on_samples(self, batch: GpuSampleBatch, now_s: float) -> None:
        host = self._hosts.setdefault(batch["host"], _Host())
        host.zone = batch["zone"]
        samples = batch["samples"]
        host.gpus.update(s["gpu_uuid"] for s in samples)
        host.samples += len(samples)
        host.newest_ms = max([host.newest_ms, *(s["end_ms"] for s in samples)])
        host.recent.append((now_s, len(samples)))

    def on_live(self, record: LiveEmission) -> None:
        if (record["host"], record["hour_start_ms"]) in self._closed:
            return
        current = self._live.get(record["record_id"])
        if current is None or record["as_of_ms"] >= current["as_of_ms"]:
            self._live[record["record_id"]] = record

    def on_hourly(self, record: EmissionHour) -> None:
        self._finals += 1
        hour_ms, host = record["hour_start_ms"], record["host"]
        self._closed.add((host, hour_ms))
        self._live = {
            k: r
            for k, r in self._live.items()
            if (r["host"], r["hour_start_ms"]) != (host, hour_ms)
        }
        hour = self._hours.setdefault(hour_ms, _Hour())
        hour.zones.add(record["zone"])
        hour.hosts.add(host)
        average = record.get("average")
        grams = average["emissions_g"] if average else None
        hour.records[record["record_id"]] = (record["energy_kwh"], grams)
        hour.revised = hour.revised or record["status"] == "revised"
        for stale in sorted(self._hours)[: -self.keep_hours]:  # bounded: the newest
            del self._hours[stale]

    def on_signal(self, signal: CarbonSignal) -> None:
        zone, intensity = signal.get("zone"), signal.get("intensity_g_per_kwh")
        if not zone or signal["kind"] not in ("eco_mode", "intensity_context"):
            return
        if intensity is not None:
            self._intensity[zone] = intensity
        if signal["kind"] == "eco_mode":
            self._eco[zone] = str(signal.get("mode") or "unknown")

    def on_removal(self, removal: Removal) -> None:
        self._removal = removal

    def snapshot(self, now_s: float) -> Snapshot:
        open_by_host: dict[str, list[LiveEmission]] = {}
        for record in self._live.values():
            open_by_host.setdefault(record["host"], []).append(record)
        rows = []
        for name in sorted(self._hosts):
            host = self._hosts[name]
            while host.recent and host.recent[0][0] < now_s - self.rate_window_s:
                host.recent.popleft()
            rate = sum(n for _, n in host.recent) / self.rate_window_s
            live = open_by_host.get(name, [])
            newest_hour = max((r["hour_start_ms"] for r in live), default=None)
            current = [r for r in live if r["hour_start_ms"] == newest_hour]
            grams = [r.get("emissions_average_g") for r in current]
            rows.append(
                HostRow(
                    host=name,
                    zone=host.zone,
                    gpus=len(host.gpus),
                    samples=host.samples,
                    samples_per_s=rate,
                    newest_ms=host.newest_ms,
                    open_hour_ms=newest_hour,
                    open_kwh=sum(r["energy_mj"] for r in current) / 3.6e9,
                    open_g=None if not current or None in grams else sum(g or 0.0 for g in grams),
                )
            )
        hours = [
            HourRow(
                hour_start_ms=hour_ms,
                zones=",".join(sorted(hour.zones)),
                hosts=len(hour.hosts),
                energy_kwh=sum(kwh for kwh, _ in hour.records.values()),
                emissions_g=None
                if any(g is None for _, g in hour.records.values())
                else sum(g or 0.0 for _, g in hour.records.values()),
                revised=hour.revised,
            )
            for hour_ms, hour in sorted(self._hours.items(), reverse=True)
        ]
        return Snapshot(
            hosts=rows,
            samples_per_s=sum(r.samples_per_s for r in rows),
            open_hours=len({(r["host"], r["hour_start_ms"]) for r in self._live.values()}),
            final_hours=hours,
            finals=self._finals,
            removal=self._removal,
            eco={
                zone: mode
                + (f" ({self._intensity[zone]:.0f} g/kWh)" if zone in self._intensity else "")
                for zone, mode in sorted(self._eco.items())
            },
        )


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _short(ms: int | None, fmt: str) -> str:
    return "-" if not ms else datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt)


def _grams(value: float | None) -> str:
    return "unpriced" if value is None else f"{value:,.1f}"


def render(snapshot: Snapshot, title: str = "llcr up") -> RenderableType:
    """The snapshot as rich tables: hosts, latest final hours, removal, signals (times UTC)."""
    hosts = Table(title=f"{title}: hosts", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("host", "zone", "GPUs", "samples", "per s", "newest", "open hour"):
        hosts.add_column(column, justify="left" if column in ("host", "zone") else "right")
    hosts.add_column("kWh", justify="right")
    hosts.add_column("gCO2e", justify="right")
    for h in snapshot.hosts:
        hosts.add_row(
            h.host,
            h.zone,
            str(h.gpus),
            f"{h.samples:,}",
            f"{h.samples_per_s:,.0f}",
            _short(h.newest_ms, "%m-%d %H:%M"),
            _short(h.open_hour_ms, "%m-%d %H:00"),
            f"{h.open_kwh:.3f}",
            _grams(h.open_g),
        )
    hosts.caption = (
        f"{snapshot.samples_per_s:,.0f} samples/s, {snapshot.open_hours} open host-hour(s)"
    )
    finals = Table(title="latest final hours", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("hour", "zones", "hosts", "kWh", "grid gCO2e", "obligation g", "removed g"):
        finals.add_column(column, justify="left" if column in ("hour", "zones") else "right")
    by_hour = snapshot.removal.by_hour if snapshot.removal else {}
    for row in snapshot.final_hours:
        obligation, removed = by_hour.get(row.hour_start_ms, (None, None))
        finals.add_row(
            _short(row.hour_start_ms, "%Y-%m-%d %H:00") + (" rev" if row.revised else ""),
            row.zones,
            str(row.hosts),
            f"{row.energy_kwh:.3f}",
            _grams(row.emissions_g),
            "-" if obligation is None else f"{obligation:,.1f}",
            "-" if removed is None else f"{removed:,.1f}",
        )
    finals.caption = f"{snapshot.finals} final/revised record(s) so far"
    return Group(hosts, finals, Text(removal_text(snapshot.removal)), Text(eco_text(snapshot.eco)))


def removal_text(removal: Removal | None) -> str:
    if removal is None:
        return "removal   waiting for the sink's store"
    return (
        f"removal   obligation {removal.obligation_g:,.0f} g, removed {removal.removed_g:,.0f} g "
        f"(capture {removal.captured_g:,.0f} g net, credits {removal.credits_retired_g:,.0f} g "
        f"retired, {removal.orders} order(s)); carbon debt {removal.debt_g:,.0f} g; "
        f"{removal.covered_hours} of {removal.scope_hours} scope-hours covered; "
        f"{removal.priced_text()}"
    )


def eco_text(eco: dict[str, str]) -> str:
    if not eco:
        return "signals   no eco-mode decision yet"
    return "signals   eco mode " + ", ".join(f"{zone} {mode}" for zone, mode in eco.items())


def status_line(snapshot: Snapshot) -> str:
    """The snapshot in one line, for a log or a pipe."""
    newest = max((h.newest_ms for h in snapshot.hosts), default=0)
    removal = snapshot.removal
    debt = "debt ?" if removal is None else f"debt {removal.debt_g:,.0f} g"
    if removal is not None and removal.estimated_hours:
        debt += f" ({removal.unpriced_kwh:,.3f} kWh unpriced, owed on estimates)"
    removed = "" if removal is None else f", removed {removal.removed_g:,.0f} g"
    return (
        f"status   {len(snapshot.hosts)} host(s), {snapshot.samples_per_s:,.0f} samples/s, "
        f"event time {_time(newest)}, {snapshot.open_hours} open host-hour(s), "
        f"{snapshot.finals} final record(s){removed}, {debt}; {eco_text(snapshot.eco)[10:]}"
    )


REMOVAL_SQL = (
    "SELECT 'total', toInt64(0), sum(obligation_g), sum(removed_g), "
    "toFloat64(countIf(debt_g <= 0.001)), toFloat64(count()) FROM llcr.carbon_debt_hourly "
    "UNION ALL SELECT 'hour', toInt64(toUnixTimestamp64Milli(hour_start)), sum(obligation_g), "
    "sum(removed_g), 0, 0 FROM llcr.carbon_debt_hourly GROUP BY hour_start "
    "UNION ALL SELECT 'capture', toInt64(0), sum(ifNull(net_g, 0)), 0, 0, 0 "
    "FROM llcr.capture_hourly "
    "UNION ALL SELECT 'credits', toInt64(0), toFloat64(sumIf(quantity_g, status = 'retired')), 0, "
    "toFloat64(count()), 0 FROM llcr.removal_orders_current "
    "UNION ALL SELECT 'estimated', toInt64(0), sum(estimated_g), sum(unpriced_kwh), "
    "toFloat64(countIf(estimated_g > 0)), 0 FROM llcr.obligation_basis_hourly"
)


def removal_of(rows: Sequence[Sequence[Any]]) -> Removal:
    """A :class:`Removal` from the rows of :data:`REMOVAL_SQL`."""
    values: dict[str, tuple[float, ...]] = {}
    by_hour: dict[int, tuple[float, float]] = {}
    for kind, hour_ms, a, b, c, d in rows:
        numbers = tuple(float(x) for x in (a, b, c, d))
        if kind == "hour":
            by_hour[int(hour_ms)] = (numbers[0], numbers[1])
        else:
            values[str(kind)] = numbers
    total = values.get("total", (0.0, 0.0, 0.0, 0.0))
    credits = values.get("credits", (0.0, 0.0, 0.0, 0.0))
    estimated = values.get("estimated", (0.0, 0.0, 0.0, 0.0))
    return Removal(
        obligation_g=total[0],
        removed_g=total[1],
        covered_hours=int(total[2]),
        scope_hours=int(total[3]),
        captured_g=values.get("capture", (0.0,))[0],
        credits_retired_g=credits[0],
        orders=int(credits[2]),
        by_hour=by_hour,
        estimated_hours=int(estimated[2]),
        estimated_g=estimated[0],
        unpriced_kwh=estimated[1],
    )
