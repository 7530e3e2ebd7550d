"""The live view of a `llcr up` run: the pipeline's topics and store, drawn in place
(rich) or printed as lines, until the run stops. A record the view cannot decode or show
is counted and skipped: the view outlives any message."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import click

from schemas import kafka as clients
from schemas.records import EmissionHour
from schemas.settings import KafkaSettings
from schemas.topics import TopicKey
from streams.settings import ClickHouseSettings

logger = logging.getLogger(__name__)


def removal_line(clickhouse: ClickHouseSettings) -> str:
    """One line on removal so far, through the sink's query endpoint."""
    from schemas.errors import LlcrError
    from streams.sink.query import run_query
    from streams.view import REMOVAL_SQL, removal_of, removal_text

    try:
        return removal_text(removal_of(run_query(clickhouse, REMOVAL_SQL, endpoint_only=True).rows))
    except LlcrError as exc:
        return f"removal   (not available: {exc})"


def watch(
    kafka: KafkaSettings,
    clickhouse: ClickHouseSettings,
    stop: threading.Event,
    redraw: bool,
    children: Callable[[], str],
) -> None:
    """Feed the live view from the pipeline's topics and store until ``stop``.

    ``redraw``: redraw it in place (rich); otherwise print each final or revised hour as a
    line and a status line every 10 s. ``children``: the supervisor's line. A record the
    view cannot decode or show is counted and skipped: the view outlives any message.
    """
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from schemas.codec import make_codec
    from schemas.errors import LlcrError
    from schemas.topics import spec
    from streams.sink.query import run_query
    from streams.view import REMOVAL_SQL, TOPICS, LiveView, removal_of, render, status_line

    codec = make_codec(kafka.framing, kafka.registry_ids)
    consumer = clients.consumer(kafka, "llcr-up-view")
    keys: dict[str, TopicKey] = {kafka.topics.name(key): key for key in TOPICS}
    clients.assign_whole(consumer, {name: spec(key).partitions for name, key in keys.items()})
    view = LiveView()
    skipped = 0
    console = Console()
    display = Live(console=console, refresh_per_second=2, transient=False) if redraw else None
    next_removal = next_status = time.monotonic() + 2
    try:
        if display is not None:
            display.start()
        while not stop.is_set():
            for message in consumer.consume(500, 0.25):
                shown = feed(view, codec, keys, message)
                if shown is None:
                    skipped += 1
                elif shown and display is None:
                    click.echo(shown)
            now = time.monotonic()
            if now >= next_removal:
                next_removal = now + 2
                with suppress(LlcrError):  # the sink is starting or stopping: "waiting"
                    view.on_removal(
                        removal_of(run_query(clickhouse, REMOVAL_SQL, endpoint_only=True).rows)
                    )
            footer = children() + (f"; {skipped} record(s) the view skipped" if skipped else "")
            if display is not None:
                display.update(Group(render(view.snapshot(now)), Text(footer)))
            elif now >= next_status:
                next_status = now + 10
                click.echo(status_line(view.snapshot(now)))
                click.echo(footer)
    finally:
        if display is not None:
            display.stop()
        consumer.close()


def feed(view: Any, codec: Any, keys: dict[str, TopicKey], message: Any) -> str | None:
    """Give one consumed message to the view: the line to print for it ("" for none), or
    None when it could not be decoded or shown (a record must never stop the view)."""
    from schemas.topics import spec

    value, topic = message.value(), message.topic()
    if message.error() or value is None or topic is None:
        return ""
    key = keys[topic]
    try:
        record: Any = codec.decode(spec(key).schema, value)
        view.feed(key, record, time.monotonic())
        return hour_line(record) if key == "emissions_hourly" else ""
    except Exception as exc:  # counted by the caller
        logger.debug("the view skipped a record of %s: %s", topic, exc)
        return None


def hour_line(r: EmissionHour) -> str:
    """One final or revised hour as a line of text."""
    hour = datetime.fromtimestamp(r["hour_start_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:00")
    average = r.get("average")
    grams = f"{average['emissions_g']:9.1f} gCO2e" if average else "  (no intensity yet)"
    return (
        f"{r['status']:<8} {hour}  {r['host']:<12} {r['zone']:<5} "
        f"{r['gpu_uuid'][-8:]:<8} {r['job_id'][:12]:<12} {r['energy_kwh']:7.3f} kWh {grams}"
        f"  rev {r['revision']}"
    )
