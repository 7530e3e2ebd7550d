"""The bench's job, the idiomatic bytewax way: KafkaSource, explode to samples, an
EventClock on the sample's start, 1-hour tumbling windows per GPU summing energy.

    python bytewax_job.py BOOTSTRAP TOPIC SCHEMA.avsc MESSAGES  -> prints one JSON line
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import bytewax.operators.windowing as win
from block import Blocks
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower
from bytewax.testing import run_main

bootstrap, topic, schema, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
blocks = Blocks(schema)
clock_marks: dict[str, float] = {}
windows = [0]


def explode(message: object) -> list[dict[str, object]]:
    clock_marks.setdefault("first", time.perf_counter())
    out = blocks.samples(message.value)  # type: ignore[attr-defined]
    clock_marks["last"] = time.perf_counter()
    return out


def count(_: object) -> None:
    windows[0] += 1


flow = Dataflow("peer")
messages = op.input("in", flow, KafkaSource([bootstrap], [topic], tail=False))
samples = op.flat_map("explode", messages, explode)
keyed = op.key_on("gpu", samples, lambda s: s["gpu"])
clock = EventClock(
    lambda s: datetime.fromtimestamp(s["start_ms"] / 1000, tz=UTC),
    wait_for_system_duration=timedelta(0),
)
windower = TumblingWindower(length=timedelta(hours=1), align_to=datetime(2023, 1, 1, tzinfo=UTC))
hourly = win.fold_window(
    "hourly",
    keyed,
    clock,
    windower,
    lambda: 0,
    lambda acc, s: acc + s["energy_mj"],
    lambda a, b: a + b,
)
op.inspect("count", hourly.down, lambda step, item: count(item))
started = time.perf_counter()
run_main(flow)
ended = time.perf_counter()
print(
    json.dumps(
        {
            "peer": "bytewax",
            "messages": blocks.messages,
            "seconds": ended - clock_marks.get("first", started),
            "windows": windows[0],
        }
    )
)
