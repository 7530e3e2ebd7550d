"""The bench's job, the idiomatic Quix Streams way: decode, explode to samples, the
sample's start as the timestamp, group_by GPU, 1-hour tumbling windows summing energy;
with ``--asof``, group_by zone and join_asof to the intensity topic first.

    python quix_job.py BOOTSTRAP TOPIC SCHEMA.avsc SAMPLES [--asof INTENSITY_TOPIC]
    -> prints one JSON line
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from typing import Any

from block import Blocks
from quixstreams import Application
from quixstreams.models.serializers import Deserializer
from quixstreams.models.topics import TopicConfig

bootstrap, topic_name, schema, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
asof = sys.argv[6] if len(sys.argv) > 6 and sys.argv[5] == "--asof" else None
blocks = Blocks(schema)
marks: dict[str, float] = {}
windows = [0]
seen = [0]  # samples through the per-GPU repartition


class BlockDeserializer(Deserializer):
    def __call__(self, value: bytes, ctx: Any) -> list[dict[str, Any]]:
        marks.setdefault("first", time.perf_counter())
        out = blocks.samples(value)
        marks["last"] = time.perf_counter()
        return out


class IntensityDeserializer(Deserializer):
    """The intensity events (Avro, llcr.v1.GridIntensityEvent): only what the join uses."""

    def __init__(self, schema_file: str) -> None:
        super().__init__()
        import io

        import fastavro

        self._io = io
        self._fastavro = fastavro
        with open(schema_file, encoding="utf-8") as text:
            self.schema = fastavro.parse_schema(json.load(text))

    def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
        buf = self._io.BytesIO(value)
        buf.seek(10)
        event = self._fastavro.schemaless_reader(buf, self.schema, None)
        return {
            "zone": event["zone"],
            "start_ms": event["period_start_ms"],
            "g_per_kwh": event["intensity_g_per_kwh"],
        }


app = Application(
    broker_address=bootstrap,
    consumer_group=f"peer-quix-{uuid.uuid4().hex[:8]}",
    auto_offset_reset="earliest",
    state_dir=tempfile.mkdtemp(),
    loglevel="WARNING",
)
topic = app.topic(topic_name, value_deserializer=BlockDeserializer())
sdf = app.dataframe(topic)
sdf = sdf.apply(lambda samples: samples, expand=True)
sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: value["start_ms"])
if asof is not None:
    events = IntensityDeserializer(schema.replace("gpu_sample_block", "grid_intensity"))
    intensity = app.topic(
        asof,
        value_deserializer=events,
        timestamp_extractor=lambda value, headers, timestamp, kind: value["start_ms"],
    )
    # join_asof needs both sides co-partitioned: the prices, keyed by zone, are copied to
    # a topic with as many partitions as the samples'
    zone_prices = app.topic(
        f"peer-zone-prices-{uuid.uuid4().hex[:8]}",
        config=TopicConfig(num_partitions=8, replication_factor=1),
        key_serializer="str",
        key_deserializer="str",
        value_serializer="json",
        value_deserializer="json",
    )
    app.dataframe(intensity).to_topic(zone_prices, key=lambda v: v["zone"])
    prices = app.dataframe(zone_prices)
    sdf = sdf.group_by(lambda v: v["zone"], name="zone-samples")
    sdf = sdf.join_asof(prices, how="left")
    sdf = sdf.apply(lambda v: {**v, "g": v["energy_mj"] / 3.6e9 * (v.get("g_per_kwh") or 0.0)})
sdf = sdf.group_by(lambda v: v["gpu"], name="gpu")


def through(value: Any) -> None:
    seen[0] += 1
    if seen[0] >= expected:
        marks["done"] = time.perf_counter()


sdf = sdf.update(through)
sdf = sdf.apply(lambda v: v["energy_mj"]).tumbling_window(duration_ms=3_600_000).sum().final()


def counted(value: Any) -> None:
    windows[0] += 1


sdf = sdf.update(counted)


def stop_when_done() -> None:
    import threading

    def watch() -> None:
        deadline = time.monotonic() + 900
        while seen[0] < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        app.stop()

    threading.Thread(target=watch, daemon=True).start()


stop_when_done()
app.run()
print(
    json.dumps(
        {
            "peer": "quix-asof" if asof else "quix",
            "messages": blocks.messages,
            "samples": seen[0],
            "seconds": marks.get("done", float("nan")) - marks.get("first", 0.0),
            "windows": windows[0],
        }
    )
)
