"""Benchmark: the ClickHouse sink into chDB, rows/s for sample rows and emission rows.

1. insert: clickhouse-connect inserts of pre-built rows into chDB, by batch size;
2. sink: the whole `llcr sink` path (consume + Avro decode + map + insert + commit) over a
   pre-loaded topic, from the sink's start to the last row stored.

    PYTHONPATH=. python bench/sink.py [--batches 20000] [--samples-per-batch 8]
                                      [--emissions 100000] [--format block|batch]

``--format``: what the agents publish, the v2 columnar block (default, this release) or
the v1 per-sample batch (older agents).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from schemas.admin import create_topics
from schemas.blocks import to_block
from schemas.codec import Codec
from schemas.settings import KafkaSettings
from streams.embedded.broker import Broker
from streams.settings import ClickHouseSettings, SinkSettings
from streams.sink.rows import TABLES
from streams.sink.run import tune_gc
from streams.sink.sink import Sink, SinkStats
from streams.sink.store import Store
from tests.examples import EXAMPLES


def sample_batch(i: int, per_batch: int, gpus: int = 8) -> dict[str, Any]:
    """Message ``i`` of one host of ``gpus`` GPUs (fewer when ``per_batch`` is smaller):
    ``per_batch / gpus`` one-second readings of each, as an agent publishes them."""
    batch: dict[str, Any] = copy.deepcopy(EXAMPLES["gpu_sample_batch"])
    template = batch["samples"][0]
    batch["batch_id"] = f"host-a:{i}"
    batch["samples"] = []
    gpus = min(gpus, per_batch)
    ticks = per_batch // gpus
    for k in range(per_batch):
        gpu, tick = k % gpus, i * ticks + k // gpus
        sample = copy.deepcopy(template)
        sample.update(gpu_uuid=f"GPU-{gpu:04d}", gpu_index=gpu, seq=tick)
        sample["start_ms"] += tick * 1000
        sample["end_ms"] += tick * 1000
        batch["samples"].append(sample)
    return batch


def emission(i: int) -> dict[str, Any]:
    record: dict[str, Any] = copy.deepcopy(EXAMPLES["emissions_hourly"])
    record["record_id"] = f"rec{i}"
    record["hour_start_ms"] += (i // 1000) * 3_600_000
    return record


def bench_insert(directory: Path, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    store = Store(ClickHouseSettings(dsn=f"chdb:{directory}"))
    store.open()
    for table, all_rows in rows.items():
        columns = next(m.columns for m in TABLES.values() if m.table == table)
        for size in (1_000, 10_000, 50_000):
            started = time.perf_counter()
            for start in range(0, len(all_rows), size):
                store.insert(table, all_rows[start : start + size], columns)
            took = time.perf_counter() - started
            print(
                f"insert  {table:17} batch {size:6}: {len(all_rows) / took:10,.0f} rows/s "
                f"({len(all_rows)} rows in {took:.2f}s)"
            )
    store.close()


def bench_sink(
    kafka: KafkaSettings,
    directory: Path,
    batches: int,
    per_batch: int,
    emissions: int,
    *,
    sample_format: str = "block",
) -> None:
    codec = Codec()
    producer = Producer({**kafka.librdkafka(), "linger.ms": "50", "compression.type": "lz4"})
    for i in range(batches):
        producer.produce(
            kafka.topics.name("samples"),
            codec.encode("gpu_sample_block", to_block(sample_batch(i, per_batch)))  # type: ignore[arg-type]
            if sample_format == "block"
            else codec.encode("gpu_sample_batch", sample_batch(i, per_batch)),
            key=b"host-a",
        )
        producer.poll(0)
    for i in range(emissions):
        producer.produce(
            kafka.topics.name("emissions_hourly"),
            codec.encode("emissions_hourly", emission(i)),
            key=f"rec{i}".encode(),
        )
        producer.poll(0)
    producer.flush(120)
    expected = batches * per_batch + emissions
    settings = SinkSettings(
        kafka=kafka,
        clickhouse=ClickHouseSettings(dsn=f"chdb:{directory}"),
        group_id="bench-sink",
    )
    store = Store(settings.clickhouse)
    store.open()
    tune_gc()  # as `llcr sink` does
    stats = SinkStats()
    sink = Sink(settings, store=store, stats=stats)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,))
    started = time.perf_counter()
    thread.start()
    deadline = started + 600
    first: float | None = None  # the first rows stored: the group joined, reading began
    while sum(stats.rows.values()) < expected and time.perf_counter() < deadline:
        if first is None and stats.rows:
            first, first_rows = time.perf_counter(), sum(stats.rows.values())
        time.sleep(0.01)
    took = time.perf_counter() - started
    stop.set()
    thread.join(60)
    store.close()
    print(
        f"sink    end to end ({sample_format}s): {expected:,} rows "
        f"({batches:,} sample messages x {per_batch} "
        f"+ {emissions:,} emission records) in {took:.2f}s = {expected / took:,.0f} rows/s; "
        f"{stats.messages / took:,.0f} messages/s; rows {dict(stats.rows)}"
    )
    if first is not None and time.perf_counter() > first:
        steady = (expected - first_rows) / (started + took - first)
        print(f"sink    from the first rows stored to the last: {steady:,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--samples-per-batch", type=int, default=8)
    parser.add_argument("--emissions", type=int, default=100_000)
    parser.add_argument("--format", choices=["block", "batch"], default="block")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {
            "gpu_samples": [
                (*row, 0, i)  # the source partition and offset the sink adds
                for i in range(200_000 // args.samples_per_batch)
                for row in TABLES["samples"].rows(
                    to_block(sample_batch(i, args.samples_per_batch))  # type: ignore[arg-type]
                )
            ],
            "emissions_hourly": [
                row for i in range(100_000) for row in TABLES["emissions_hourly"].rows(emission(i))
            ],
        }
        bench_insert(Path(tmp) / "insert", rows)
        with Broker(log_path=Path(tmp) / "broker.log") as broker:
            for name, batches, emissions in (
                ("samples", args.batches, 0),
                ("emissions", 0, args.emissions),
            ):
                kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix=f"{name}.")
                create_topics(kafka.librdkafka(), kafka.topic_prefix)
                bench_sink(
                    kafka,
                    Path(tmp) / name,
                    batches,
                    args.samples_per_batch,
                    emissions,
                    sample_format=args.format,
                )


if __name__ == "__main__":
    main()
