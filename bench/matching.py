"""Benchmark: the matching worker end to end, next to a raw consume + decode of the same topic.

Pre-loads the samples topic (hosts x 8 GPUs, ``--ticks-per-message`` sample ticks per host
message, so 8 x that many samples per message) and a day of real DE intensity, then
1. raw: confluent-kafka assign + consume + fastavro decode of every message;
2. worker: one `llcr worker` process; throughput = samples / (last final record's
   computed_at - first live record's computed_at), i.e. from its first output to its last.

    python bench/matching.py [--hosts 64] [--ticks 2048] [--ticks-per-message 16]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from agents.gpu.agent import GpuAgent, HostIdentity
from agents.gpu.model import JobLabels
from agents.gpu.run import sample_encoder
from agents.gpu.sources import SimSource
from agents.grid.run import import_files
from agents.settings import GridFeederSettings
from schemas.admin import create_topics
from schemas.codec import Codec
from schemas.settings import KafkaSettings
from schemas.topics import spec
from streams.columns import SAMPLES, SHARES
from streams.embedded.broker import Broker

T0 = 1_672_531_200_000
ROOT = Path(__file__).parent.parent


def preload(
    kafka: KafkaSettings, hosts: int, ticks: int, per_message: int, sample_format: str = "block"
) -> tuple[int, int]:
    """The samples topic of ``hosts`` sim hosts, as their agents publish it: v2 blocks
    (``sample_format`` "block", this release's agents) or v1 batches."""
    codec = Codec()
    encode = sample_encoder(codec, sample_format)
    producer = Producer(
        {
            **kafka.librdkafka(),
            "partitioner": "murmur2_random",
            "linger.ms": "50",
            "compression.type": "lz4",
            "queue.buffering.max.messages": "200000",
        }
    )
    topic = kafka.topics.name("samples")
    messages = samples = 0
    for h in range(hosts):
        host = f"bench-{h}"
        agent = GpuAgent(
            HostIdentity(host, host, "fra-1", "DE", "sim"),
            SimSource(8, seed=h, host=host),
            lambda pid: JobLabels(f"job-{pid % 4}", "acme"),
        )
        for tick in range(ticks + 1):
            agent.sample(T0 + tick * 1000)
            if tick and tick % per_message == 0:
                batch = agent.take_batch(T0 + tick * 1000)
                assert batch is not None
                producer.produce(topic, encode(batch), host.encode())
                producer.poll(0)
                messages += 1
                samples += len(batch["samples"])
    assert producer.flush(120) == 0
    return messages, samples


def raw_consume(kafka: KafkaSettings, messages: int) -> float:
    """confluent-kafka assign + consume, each message decoded as written (a v2 block's
    rows read with ``numpy.frombuffer``, what a columnar consumer does; a v1 batch to its
    sample dicts): samples/s from the first message to the last one decoded."""
    codec = Codec()
    consumer = Consumer({**kafka.librdkafka(), "group.id": "raw", "enable.auto.commit": "false"})
    topic = kafka.topics.name("samples")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(spec("samples").partitions)])
    seen = samples = 0
    started = last = None
    names = ("gpu_sample_block", "gpu_sample_batch")
    while seen < messages:
        for message in consumer.consume(1000, 1.0):
            if message.error() is None:
                started = started or time.perf_counter()
                name, record = codec.decode_as_written(names, message.value())
                if name == "gpu_sample_block":
                    rows = np.frombuffer(record["sample_rows"], dtype=SAMPLES)
                    np.frombuffer(record["share_rows"], dtype=SHARES)
                    samples += len(rows)
                else:
                    samples += len(record["samples"])
                seen += 1
                last = time.perf_counter()
    consumer.close()
    # from the first message to the last one decoded: the consume call that waits for more
    # after the last message (up to its 1 s timeout) is not part of the work
    elapsed = (last or 0.0) - (started or 0.0)
    return samples / elapsed if elapsed > 0 else float("nan")


def _env(kafka: KafkaSettings, tmp: Path, app_id: str) -> dict[str, str]:
    """The worker's settings (and the null agent's: the same faust app options)."""
    return {
        **os.environ,
        "LLCR_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "LLCR_APP_ID": app_id,
        "LLCR_ACCEPT_SOURCES": '["sim"]',  # the bench's hosts are simulated
        "LLCR_DATA_DIR": str(tmp / app_id),
        "LLCR_GRACE_S": "0",
        "LLCR_MAX_WAIT_S": "3600",
        "LLCR_TICK_S": "0.5",
        "LLCR_LIVE_EVERY_S": "0.5",
        "LLCR_SESSION_TIMEOUT_S": "2",
        "LLCR_HEARTBEAT_INTERVAL_S": "0.5",
        "LLCR_REBALANCE_TIMEOUT_S": "2",
        "LLCR_BATCH_MAX_MESSAGES": "4000",
    }


def null_run(kafka: KafkaSettings, tmp: Path, messages: int) -> tuple[float, float]:
    """faust's own ceiling: messages/s of an agent that only iterates and acks (from its
    first batch to the one that completes the topic; and from 'Worker ready')."""
    out = tmp / "null.out"
    env = {
        **_env(kafka, tmp, "bench-null"),
        "NULL_AGENT_MESSAGES": str(messages),
        "NULL_AGENT_OUT": str(out),
    }
    log_path = tmp / "null.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "faust_null.py"), "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 600
        try:
            while not out.exists() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(30)
    if not out.exists():
        raise SystemExit(f"the null agent did not finish: see {log_path}")
    first, last, count = (int(x) for x in out.read_text(encoding="utf-8").split())
    ready = ready_ms(log_path)
    return per_s(count, (last - first) / 1000), per_s(count, (last - (ready or first)) / 1000)


def worker_run(
    kafka: KafkaSettings,
    tmp: Path,
    samples: int,
    last_end_ms: int,
    host_count: int,
    *,
    py_spy: Path | None = None,
) -> tuple[float, float, float, float]:
    """Samples/s up to the output that covers every host's last sample (live records carry
    ``as_of_ms``, the end of the newest sample included): from the worker's first output,
    and, stricter, from its "Worker ready" log line (which counts the first batch too)."""
    env = _env(kafka, tmp, "bench-worker")
    code = "import sys; sys.argv[0] = 'llcr'; from schemas.cli import main; main()"
    log = (tmp / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", code, "worker", "--loglevel", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    spy = None
    if py_spy is not None:  # sample the worker's stacks (collapsed: one line per stack)
        spy = subprocess.Popen(
            [
                *("py-spy", "record", "-f", "raw", "-r", "200", "-o", str(py_spy)),
                "-p",
                str(process.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    codec = Codec()
    consumer = Consumer({**kafka.librdkafka(), "group.id": "bench-out"})
    topic = kafka.topics.name("emissions_live")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(8)])
    first: int | None = None
    done: dict[str, int] = {}  # host -> when its last sample was first reported
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and len(done) < host_count:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            record = codec.decode("emissions_live", message.value())
            first = min(first or record["computed_at_ms"], record["computed_at_ms"])
            if record["as_of_ms"] >= last_end_ms and record["host"] not in done:
                done[record["host"]] = record["computed_at_ms"]
    finally:
        consumer.close()
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(60)
        process.terminate()
        process.wait(30)
        log.close()
    elapsed = (max(done.values()) - (first or 0)) / 1000 if done else float("nan")
    ready = ready_ms(tmp / "worker.log")
    whole = (max(done.values()) - ready) / 1000 if done and ready else float("nan")
    # the worker waits for the intensity backlog before its first output, which can then
    # already cover every host: no span from the first output (rate nan, not a crash)
    return per_s(samples, elapsed), elapsed, per_s(samples, whole), whole


def per_s(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def ready_ms(log: Path) -> int | None:
    """When faust logged "Worker ready" (recovery done, fetching starts), epoch ms."""
    stamps = re.findall(
        r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*Worker ready",
        log.read_text(encoding="utf-8", errors="replace"),
        flags=re.MULTILINE,
    )
    if not stamps:
        return None
    moment = datetime.strptime(stamps[0], "%Y-%m-%d %H:%M:%S,%f").astimezone()
    return int(moment.timestamp() * 1000)


def peers(kafka: KafkaSettings, venvs: Path, messages: int, samples: int, ours: float) -> None:
    """The same topic through bytewax and Quix Streams (bench/peers/): samples/s from each
    one's first decoded message to its last sample through the per-GPU windows."""
    sys.path.insert(0, str(ROOT))
    from bench.peers.run import run_peer

    where = (kafka.bootstrap_servers, kafka.topics.name("samples"))
    # Quix's join_asof variant is not run: on Tansu it fails before it starts (Quix reads
    # "retention.ms" from the broker's topic configs, which Tansu does not return)
    runs: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
        ("bytewax", "bytewax", messages, ()),
        ("quix", "quix", samples, ()),
    )
    for label, name, expected, extra in runs:
        result = run_peer(venvs, name, where, expected, extra)
        rate = per_s(samples, float(str(result["seconds"])))
        per_message = rate * messages / samples
        print(
            f"peer {label + ':':<18} {rate:,.0f} samples/s ({per_message:,.0f} msg/s);"
            f" llcr worker (from ready) is {ours / rate:.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--ticks", type=int, default=2048)
    parser.add_argument("--ticks-per-message", type=int, default=16)
    parser.add_argument("--format", choices=["block", "batch"], default="block")
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="record the worker's stacks to this file"
    )
    parser.add_argument(
        "--peers",
        type=Path,
        default=None,
        help="also run the job in bytewax and Quix Streams, their virtualenvs in this folder",
    )
    args = parser.parse_args()
    with Broker() as broker, tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix="bench.")
        create_topics(kafka.librdkafka(), "bench.")
        lines = (
            (ROOT / "agents/data/grid/DE_2023_hourly.csv").read_text(encoding="utf-8").splitlines()
        )
        hours = args.ticks // 3600 + 2
        (tmp / "de.csv").write_text("\n".join(lines[: hours + 1]) + "\n", encoding="utf-8")
        import_files(
            GridFeederSettings(kafka=kafka, state_dir=tmp / "grid"),
            [tmp / "de.csv"],
            speed=0,
            stop=threading.Event(),
        )
        started = time.perf_counter()
        messages, samples = preload(
            kafka, args.hosts, args.ticks, args.ticks_per_message, args.format
        )
        print(
            f"preloaded {messages} messages, {samples} samples "
            f"({samples / messages:.0f} per message, {args.format}s) "
            f"in {time.perf_counter() - started:.1f}s"
        )
        raw = raw_consume(kafka, messages)
        per_message = samples / messages
        print(f"raw consume + decode:  {raw:,.0f} samples/s  ({raw / per_message:,.0f} msg/s)")
        null, null_ready = null_run(kafka, tmp, messages)
        print(
            f"faust null agent:      {null:,.0f} msg/s ({null * per_message:,.0f} samples/s)"
            f" from its first batch; {null_ready:,.0f} msg/s from 'Worker ready'"
        )
        last_end = T0 + args.ticks // args.ticks_per_message * args.ticks_per_message * 1000
        rate, elapsed, strict, whole = worker_run(
            kafka, tmp, samples, last_end, args.hosts, py_spy=args.py_spy
        )
        if not math.isnan(rate):
            print(
                f"worker end to end:     {rate:,.0f} samples/s  ({rate / per_message:,.0f} msg/s)"
                f" over {elapsed:.1f}s from its first output; {100 * rate / raw:.1f} % of raw"
            )
        else:
            print("worker end to end:     n/a (its first output already covered every host)")
        print(
            f"worker from ready:     {strict:,.0f} samples/s  ({strict / per_message:,.0f} msg/s)"
            f" over {whole:.1f}s from 'Worker ready'; {100 * strict / raw:.1f} % of raw"
        )
        print(
            f"worker / null agent:   {100 * strict / per_message / null_ready:.0f} % of its "
            "messages/s, both from 'Worker ready'"
        )
        if args.peers is not None:
            peers(kafka, args.peers, messages, samples, strict)


if __name__ == "__main__":
    main()
