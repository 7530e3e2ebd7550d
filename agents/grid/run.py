"""Wire the grid feeder from settings; poll providers or import files (the I/O shell)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from agents.grid.chain import ProviderChain
from agents.grid.feeder import Cycle, GridFeeder, dead_letter
from agents.grid.files import parse_utc_offset, read_intensity_csv
from agents.grid.http import ApiClient
from agents.grid.model import Gap, Problem
from agents.grid.providers import ElectricityMaps, Neso, Provider, Static, WattTime
from agents.grid.repair import RepairPolicy
from agents.grid.revisions import RevisionLog
from agents.grid.validate import zone_is_known
from agents.publisher import Publisher, send_while_waiting
from agents.settings import GridFeederSettings, ProviderName
from agents.spool import Spool
from schemas import kafka as clients
from schemas.codec import Codec, make_codec
from schemas.records import GridIntensityEvent, Signal
from schemas.units import DAY_MS

logger = logging.getLogger(__name__)


def build_chains(settings: GridFeederSettings, client: httpx.Client) -> list[ProviderChain]:
    def api(name: str) -> ApiClient:
        return ApiClient(
            name, client, attempts=settings.retry_attempts, budget_s=settings.provider_budget_s
        )

    def make(name: ProviderName, signal: Signal) -> Provider | None:
        if name == "electricitymaps" and settings.electricitymaps_token and signal == "average":
            token = settings.electricitymaps_token.get_secret_value()
            return ElectricityMaps(api(name), token, settings.electricitymaps_url)
        if name == "watttime" and settings.watttime_username and settings.watttime_password:
            return WattTime(
                api(name),
                username=settings.watttime_username,
                password=settings.watttime_password.get_secret_value(),
                regions=settings.watttime_regions,
                signal=signal,
                base_url=settings.watttime_url,
            )
        if name == "neso" and signal == "average":
            return Neso(api(name), settings.neso_url)
        if name == "static" and settings.static_g_per_kwh and signal == "average":
            return Static(settings.static_g_per_kwh)
        return None  # not configured (no key) or not a provider of this signal

    chains = []
    wanted: tuple[tuple[Signal, list[ProviderName]], ...] = (
        ("average", settings.average_chain),
        ("marginal", settings.marginal_chain),
    )
    for signal, names in wanted:
        providers = [p for name in names if (p := make(name, signal)) is not None]
        if providers:
            chains.append(ProviderChain(providers))
            logger.info("%s chain: %s", signal, " -> ".join(p.name for p in providers))
    return chains


@dataclass
class Outlet:
    """Where events and dead letters go: spooled, then produced (like the GPU agent)."""

    events: Publisher
    dead_letters: Publisher
    codec: Codec
    spools: tuple[Spool, Spool]

    def publish(self, cycle: Cycle, now_ms: int) -> None:
        """Spool a cycle's events and dead letters (one fsync each), then send."""
        self.events.submit_many(
            [(e["zone"].encode(), self.codec.encode("grid_intensity", e)) for e in cycle.events]
        )
        self.dead_letters.submit_many(
            [
                (b"agent.grid", self.codec.encode("dead_letter", dead_letter(p, now_ms)))
                for p in cycle.problems
            ]
        )
        self.pump()

    def pump(self) -> None:
        self.events.pump(0)
        self.dead_letters.pump(0)

    def send_while_waiting(self, stop: threading.Event, seconds: float) -> None:
        """Wait ``seconds`` (or until ``stop``) while sending what is spooled."""
        send_while_waiting((self.events, self.dead_letters), stop, seconds)

    def close(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        ok = all(
            p.flush(max(0.0, deadline - time.monotonic())) for p in (self.events, self.dead_letters)
        )
        for publisher, spool in zip((self.events, self.dead_letters), self.spools, strict=True):
            publisher.stats.spooled_at_stop = spool.pending
            spool.close()
        return ok


def open_outlet(settings: GridFeederSettings) -> Outlet:
    def factory() -> Any:
        return clients.idempotent_producer(
            settings.kafka, {"linger.ms": "20", "message.timeout.ms": "10000"}
        )

    spools = (
        Spool(settings.state_dir / "spool-events", 256 * 2**20),
        Spool(settings.state_dir / "spool-dead-letters", 64 * 2**20),
    )
    topics = settings.kafka.topics
    return Outlet(
        Publisher(factory, topics.name("intensity"), spools[0]),
        Publisher(factory, topics.name("dead_letters"), spools[1]),
        make_codec(settings.kafka.framing, settings.kafka.registry_ids),
        spools,
    )


def new_feeder(settings: GridFeederSettings, chains: Sequence[ProviderChain]) -> GridFeeder:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return GridFeeder(
        chains,
        RevisionLog.load(settings.state_dir / "revisions.json"),
        zones=settings.zones,
        ceiling=settings.ceiling_g_per_kwh,
        known=zone_is_known(settings.zones),
        repair_policy=repair_policy_of(settings),
    )


def poll_forever(
    settings: GridFeederSettings,
    stop: threading.Event,
    *,
    once: bool = False,
    clock: Callable[[], float] = time.time,
) -> GridFeeder:
    """Poll every chain every ``poll_interval_s`` until ``stop`` (or once)."""
    outlet = open_outlet(settings)
    with httpx.Client(timeout=settings.request_timeout_s) as client:
        feeder = new_feeder(settings, build_chains(settings, client))
        if settings.metrics_port is not None:
            from agents.metrics import serve

            serve(feeder.stats, settings.metrics_port)
        while not stop.is_set():
            now_ms = int(clock() * 1000)
            cycle = feeder.poll(now_ms)
            outlet.publish(cycle, now_ms)  # spooled first, then the log: a crash repeats
            feeder.log.forget_before(now_ms - settings.history_days * DAY_MS)
            feeder.log.save(settings.state_dir / "revisions.json")
            logger.info(
                "poll: %d event(s) (%d filled), %d rejected, %d gap(s)",
                len(cycle.events),
                cycle.filled,
                len(cycle.problems),
                len(cycle.gaps),
            )
            if once:
                break
            outlet.send_while_waiting(stop, settings.poll_interval_s)
    outlet.close()
    return feeder


@dataclass
class Imported:
    events: int = 0  # handed to the outlet (spooled, then produced)
    delivered: int = 0  # acknowledged by the broker
    spooled: int = 0  # still in the spool at stop: sent at next start
    problems: list[Problem] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    filled: int = 0  # of the events: estimates for missing or implausible periods


def repair_policy_of(settings: GridFeederSettings) -> RepairPolicy:
    """The feeder's gap and outlier policy from its settings."""
    return RepairPolicy(
        fill=settings.fill_gaps,
        max_fill_h=settings.max_fill_h,
        window_h=settings.outlier_window_h,
        low_ratio=settings.outlier_low_ratio,
        high_ratio=settings.outlier_high_ratio,
        step_ratio=settings.outlier_step_ratio,
        min_delta_g=settings.outlier_min_delta_g,
        judge_marginal=settings.outlier_judge_marginal,
        min_history=settings.outlier_min_history,
    )


def _paced(
    events: list[GridIntensityEvent],
    send: Callable[[list[GridIntensityEvent]], None],
    wait: Callable[[float], object],
    *,
    speed: float,
    stop: threading.Event,
    clock: Callable[[], float] | None,
) -> int:
    """Send ``events`` (sorted by period start) as their time comes: on ``clock`` when
    given, else ``speed`` file seconds per wall second (0: all at once); ``wait(s)`` passes
    the time between (sending what is spooled). How many went."""
    started = time.monotonic()
    first = events[0]["period_start_ms"] if events else 0
    sent = 0
    while sent < len(events) and not stop.is_set():
        # everything due by now goes in one spool write (speed 0: all of it at once)
        if clock is not None:
            elapsed_ms = clock() * 1000 - first
        elif speed > 0:
            elapsed_ms = (time.monotonic() - started) * 1000 * speed
        else:
            elapsed_ms = float("inf")
        due = sent
        while due < len(events) and events[due]["period_start_ms"] - first <= elapsed_ms:
            due += 1
        if due > sent:
            send(events[sent:due])
            sent = due
            continue
        next_in_s = (events[sent]["period_start_ms"] - first - elapsed_ms) / 1000 / speed
        wait(min(0.5, max(0.0, next_in_s)))
    return sent


def import_files(
    settings: GridFeederSettings,
    files: Sequence[Path],
    *,
    speed: float,
    stop: threading.Event,
    clock: Callable[[], float] | None = None,
) -> Imported:
    """Publish the periods of intensity files with their original timestamps.

    ``speed`` is file seconds per wall second (3600: an hour of data per second); 0 sends
    everything at once. With ``clock`` (epoch seconds, e.g. a simulated clock shared with
    the GPU agents) each period goes when the clock reaches its start instead. Every row is
    validated; each bad one is reported and dead-lettered.
    """
    outlet = open_outlet(settings)
    known = zone_is_known(settings.zones if "zones" in settings.model_fields_set else None)
    feeder = GridFeeder(
        [],
        RevisionLog.load(settings.state_dir / "revisions.json"),
        zones=settings.zones,
        ceiling=settings.ceiling_g_per_kwh,
        known=known,
        repair_policy=repair_policy_of(settings),
    )
    now_ms = int(time.time() * 1000)
    result = Imported()
    cycle = Cycle()
    # events go out paced, long after they are observed: only those sent are saved as
    # published, or a feeder restarted mid-file would never send the rest
    published = feeder.log.copy()
    named = settings.file_utc_offset
    offset = None if named is None else parse_utc_offset(named)
    for path in files:
        with path.open(encoding="utf-8-sig", newline="") as lines:
            observations, unreadable = read_intensity_csv(lines, path.name, offset)
        cycle.problems += unreadable
        feeder.stats.count(Cycle(problems=unreadable))
        cycle.extend(feeder.ingest(observations, rank=0, now_ms=now_ms))
    outlet.publish(Cycle(problems=cycle.problems), now_ms)
    events = sorted(cycle.events, key=lambda e: (e["period_start_ms"], e["zone"]))

    def send(due: list[GridIntensityEvent]) -> None:
        outlet.publish(Cycle(events=due), now_ms)
        for event in due:
            published.record(event, rank=0)

    result.events = _paced(
        events, send, partial(outlet.send_while_waiting, stop), speed=speed, stop=stop, clock=clock
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if not outlet.close():
        logger.warning(
            "stopping with records spooled in %s; sent at next start", settings.state_dir
        )
    result.delivered = outlet.events.stats.delivered
    result.spooled = outlet.events.stats.spooled_at_stop
    published.save(settings.state_dir / "revisions.json")
    result.problems, result.gaps, result.filled = cycle.problems, cycle.gaps, cycle.filled
    return result
