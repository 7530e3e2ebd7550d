"""A simulated on-site capture unit: obeys capture commands within its ramp limits and
reports what it captured on the telemetry topic, so the loop runs end to end.

Each command runs the unit for one hour from when it was issued (or from the end of the
previous command's hour); telemetry is published once that hour has passed on the
unit's clock. Telemetry ids derive from command ids, so a re-delivered command produces
the same telemetry, which the actions service ledgers once.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import kafka as clients
from schemas.codec import make_codec
from schemas.records import CaptureCommand, CaptureTelemetry
from schemas.units import HOUR_MS
from streams.removal.capture import G_PER_T, ramped_capture_g
from streams.settings import ActionsSettings, CaptureUnitConfig

logger = logging.getLogger(__name__)


@dataclass
class SimUnit:
    site: str
    config: CaptureUnitConfig
    rate_g_per_h: float = 0.0
    busy_until_ms: int = 0
    seen: set[str] = field(default_factory=set)

    def obey(self, command: CaptureCommand) -> CaptureTelemetry | None:
        """The telemetry of the hour this command runs (None for a repeated command)."""
        if command["command_id"] in self.seen:
            return None
        self.seen.add(command["command_id"])
        start = max(command["issued_at_ms"], self.busy_until_ms)
        end = start + HOUR_MS
        ramp = self.config.ramp_kg_per_h_per_h * 1000
        captured, rate = ramped_capture_g(
            self.rate_g_per_h, command["target_rate_g_per_h"], ramp, HOUR_MS
        )
        self.rate_g_per_h, self.busy_until_ms = rate, end
        tonnes = captured / G_PER_T
        return {
            "telemetry_id": f"tel-{command['command_id']}",
            "unit_id": command["unit_id"],
            "site": command["site"],
            "command_id": command["command_id"],
            "period_start_ms": start,
            "period_end_ms": end,
            "captured_g": captured,
            "electric_kwh": tonnes * self.config.electric_kwh_per_t,
            "thermal_kwh": tonnes * self.config.thermal_kwh_per_t,
            "rate_g_per_h": rate,
            "state": "running" if rate > 0 else "stopped",
            "reported_at_ms": end,
        }


def run_capture_sim(
    settings: ActionsSettings, stop: threading.Event, clock_ms: Callable[[], int]
) -> None:
    """Consume commands for the configured units; publish telemetry when each hour is over."""
    kafka = settings.kafka
    codec = make_codec(kafka.framing, kafka.registry_ids)
    units = {
        config.unit_id: SimUnit(site, config) for site, config in settings.capture_units.items()
    }
    consumer = clients.consumer(
        kafka,
        f"{settings.group_id}-capture-sim",
        {
            "auto.offset.reset": "earliest",
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "1000",
        },
    )
    producer = clients.producer(kafka)
    consumer.subscribe([kafka.topics.name("capture_commands")])
    due: list[tuple[int, str, CaptureTelemetry]] = []
    topic = kafka.topics.name("capture_telemetry")
    try:
        while not stop.is_set():
            for message in consumer.consume(num_messages=100, timeout=0.2):
                if message.error() is not None:
                    continue
                command: Any = codec.decode("capture_command", message.value() or b"")
                unit = units.get(command["unit_id"])
                if unit is None:
                    logger.warning("command for unknown unit %s ignored", command["unit_id"])
                    continue
                telemetry = unit.obey(command)
                if telemetry is not None:
                    heapq.heappush(
                        due, (telemetry["period_end_ms"], telemetry["telemetry_id"], telemetry)
                    )
            now = clock_ms()
            while due and due[0][0] <= now:
                _, _, telemetry = heapq.heappop(due)
                producer.produce(
                    topic,
                    codec.encode("capture_telemetry", telemetry),
                    key=telemetry["unit_id"].encode(),
                )
            producer.flush(30)
            if not due and consumer.assignment():
                _commit(consumer)
            time.sleep(0.05)
    finally:
        consumer.close()
        producer.flush(30)


def _commit(consumer: Any) -> None:
    from confluent_kafka import KafkaException

    with contextlib.suppress(KafkaException):  # nothing new to commit
        consumer.commit(asynchronous=False)
