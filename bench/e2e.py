"""Benchmark and soak: the whole embedded pipeline (`llcr up`) with many sim hosts.

Runs `llcr up --plain` for a warm-up plus a measured window and prints, for the window:

* samples/s stored in ClickHouse (rows of ``gpu_samples``), against what the agents offer;
* latency from a sample's timestamp to the provisional record that first includes it, on
  the topic (the worker's produce time) and as a ClickHouse row (``ingested_at``);
* latency from an hour's end to its ``final`` record, on the topic and in ClickHouse;
* CPU (cores) and peak RSS per process;
* cold start: from the command to the first emission record and the first ClickHouse row.

Every process of `up` runs on one simulated clock (``--start`` at an anchor instant, at
``--speed``), which `up` prints. A simulated instant ``t`` therefore happened on the wall
clock at ``anchor + (t - start) / speed``: that is how event times become latencies.

    PYTHONPATH=. python bench/e2e.py [--hosts 8] [--gpus 8] [--speed 360] [--duration 120]
                                     [--warmup 30] [--set LLCR_LIVE_EVERY_S=1 ...]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from confluent_kafka import Consumer, TopicPartition

from schemas.clock import wall_ms_of
from schemas.codec import make_codec
from schemas.errors import LlcrError
from schemas.settings import KafkaSettings
from schemas.topics import TopicKey, spec
from streams.embedded.broker import free_port
from streams.settings import ClickHouseSettings
from streams.sink.query import run_query

HOUR_MS = 3_600_000
CLOCK = re.compile(r"^clock\s+(\S+) at epoch ms (\d+), ([\d.]+)x")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Clock:
    """Wall-clock ms of the pipeline's simulated instants."""

    def __init__(self, start: str, anchor_ms: int, speed: float) -> None:
        self.start, self.anchor_ms, self.speed = start, anchor_ms, speed

    def wall(self, sim_ms: float) -> float:
        return wall_ms_of(sim_ms, self.start, self.speed, self.anchor_ms)


class Records:
    """Samples, provisional and final records as the bench's own consumer reads them."""

    def __init__(self, kafka: KafkaSettings, traced: set[bytes]) -> None:
        self.traced = traced  # hosts whose samples are followed (decoding costs CPU)
        # (host, gpu, job, hour) -> sample end times (event ms)
        self.samples: dict[tuple[str, str, str, int], list[int]] = defaultdict(list)
        # (sample end event ms, produce time ms of its message): the agent's part
        self.published: list[tuple[int, int]] = []
        # (host, gpu, job, hour) -> (produce time ms, as_of ms) of each provisional record
        self.live: dict[tuple[str, str, str, int], list[tuple[int, int]]] = defaultdict(list)
        self.finals: list[tuple[int, dict[str, Any]]] = []  # (produce time ms, record)
        self.first_live_ms: float = float("nan")
        self._kafka = kafka
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _take(self, key: TopicKey, record: dict[str, Any], produced: int) -> None:
        if key == "samples":
            for sample in record["samples"]:
                self.published.append((sample["end_ms"], produced))
                hour = (sample["end_ms"] - 1) // HOUR_MS * HOUR_MS
                for job in sample["jobs"]:
                    where = (record["host"], sample["gpu_uuid"], job["job_id"], hour)
                    self.samples[where].append(sample["end_ms"])
        elif key == "emissions_live":
            where = (record["host"], record["gpu_uuid"], record["job_id"], record["hour_start_ms"])
            self.live[where].append((produced, record["as_of_ms"]))
            if self.first_live_ms != self.first_live_ms:  # nan: the first one
                self.first_live_ms = produced
        elif record["status"] == "final":
            self.finals.append((produced, record))
            # a sample that came after the hour's last provisional record is first
            # reported by the final one
            where = (record["host"], record["gpu_uuid"], record["job_id"], record["hour_start_ms"])
            self.live[where].append((produced, record["hour_start_ms"] + HOUR_MS))

    def _run(self) -> None:
        kafka = self._kafka
        codec = make_codec(kafka.framing, kafka.registry_ids)
        consumer = Consumer({**kafka.librdkafka(), "group.id": "bench-e2e"})
        wanted: tuple[TopicKey, ...] = ("samples", "emissions_live", "emissions_hourly")
        keys = {kafka.topics.name(k): k for k in wanted}
        consumer.assign(
            [
                TopicPartition(name, p, 0)
                for name, key in keys.items()
                for p in range(spec(key).partitions)
            ]
        )
        try:
            while not self._stop.is_set():
                for message in consumer.consume(1000, 0.2):
                    value, topic = message.value(), message.topic()
                    if message.error() or value is None or topic is None:
                        continue
                    key = keys[topic]
                    if key == "samples" and message.key() not in self.traced:
                        continue
                    self._take(key, codec.decode(spec(key).schema, value), message.timestamp()[1])
        finally:
            consumer.close()


def provisional_latencies(
    records: Records, clock: Clock, window: tuple[float, float]
) -> list[float]:
    """Seconds from each sample's end to the first provisional record that includes it:
    the first record of its (host, GPU, job, hour), in produce order, whose ``as_of`` is at
    or after the sample's end (or the hour's final record, for a sample that came after
    the last provisional one). Samples that ended on the wall clock within ``window``."""
    out: list[float] = []
    for where, ends in records.samples.items():
        emitted = sorted(records.live.get(where, []))
        covered: list[int] = []  # running max of as_of, in produce order
        for _, as_of in emitted:
            covered.append(max(as_of, covered[-1]) if covered else as_of)
        for end in ends:
            wall = clock.wall(end)
            if not window[0] <= wall <= window[1]:
                continue
            i = bisect.bisect_left(covered, end)
            if i < len(emitted):
                out.append((emitted[i][0] - wall) / 1000)
            else:
                out.append(float("inf"))  # never reported: counts against the tail
    return out


def process_name(process: psutil.Process) -> str:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return "?"
    if any("tansu" in part for part in argv[:2]):
        return "broker (tansu)"
    if "-c" in argv:
        args = argv[argv.index("-c") + 2 :]
        words = [a for a in args[:2] if not a.startswith("-")]
        return " ".join(words) or "?"
    return Path(argv[0]).name if argv else "?"


class Usage:
    """CPU seconds over the window and peak RSS, per process of the `up` tree."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.cpu0: dict[int, float] = {}
        self.cpu1: dict[int, float] = {}
        self.rss: dict[int, int] = defaultdict(int)
        self.names: dict[int, str] = {}

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu(self) -> dict[int, float]:
        out = {}
        for process in self._tree():
            try:
                times = process.cpu_times()
                out[process.pid] = times.user + times.system
                self.names.setdefault(process.pid, process_name(process))
            except psutil.Error:
                continue
        return out

    def begin(self) -> None:
        self.cpu0 = self._cpu()

    def sample_rss(self) -> None:
        for process in self._tree():
            try:
                self.rss[process.pid] = max(self.rss[process.pid], process.memory_info().rss)
            except psutil.Error:
                continue

    def end(self) -> None:
        self.cpu1 = self._cpu()

    def table(self, seconds: float) -> list[tuple[str, int, float, float]]:
        """(name, processes, CPU cores, peak RSS MiB per process) grouped by name."""
        groups: dict[str, list[int]] = defaultdict(list)
        for pid in self.cpu1:
            name = self.names[pid]
            groups["agent gpu" if name.startswith("agent gpu") else name].append(pid)
        rows = []
        for name, pids in sorted(groups.items()):
            cpu = sum(self.cpu1[p] - self.cpu0.get(p, 0.0) for p in pids) / seconds
            rss = max(self.rss.get(p, 0) for p in pids) / 2**20
            rows.append((name, len(pids), cpu, rss))
        return rows


def count(clickhouse: ClickHouseSettings, sql: str) -> int:
    return int(run_query(clickhouse, sql, endpoint_only=True).rows[0][0])


def first_row(clickhouse: ClickHouseSettings, deadline: float) -> float:
    """Wall ms when the first provisional row was in ClickHouse (polled through the sink's
    query endpoint; opening chDB before the sink would take it from the sink)."""
    while time.monotonic() < deadline:
        with contextlib.suppress(LlcrError):
            if count(clickhouse, "SELECT count() FROM llcr.emissions_live") > 0:
                return time.time() * 1000
        time.sleep(0.1)
    return float("nan")


def main() -> None:  # noqa: PLR0915 (one linear script)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--speed", type=float, default=360.0)
    parser.add_argument("--duration", type=float, default=120.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument(
        "--traced", type=int, default=2, help="hosts whose every sample's latency is measured"
    )
    parser.add_argument(
        "--set", action="append", default=[], help="NAME=VALUE for every process (repeatable)"
    )
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="llcr-e2e-"))
    port = free_port()
    env = {**os.environ, **dict(item.split("=", 1) for item in args.set)}
    total = args.warmup + args.duration + 60  # slack: `up` must outlive the window
    argv = [sys.executable, "-c", "from schemas.cli import main; main()", "up", "--plain"]
    argv += ["--hosts", str(args.hosts), "--gpus", str(args.gpus), "--speed", str(args.speed)]
    argv += ["--duration", str(total), "--port", str(port), "--data-dir", str(data)]
    launched_ms = time.time() * 1000
    up = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert up.stdout is not None
    clock: Clock | None = None
    for line in up.stdout:
        if match := CLOCK.match(line):
            clock = Clock(match[1], int(match[2]), float(match[3]))
        if line.startswith("ready in") or up.poll() is not None:
            print(line.rstrip())
            break
    assert clock is not None, "up did not print its clock"
    drained = threading.Thread(target=lambda: [None for _ in up.stdout or ()], daemon=True)
    drained.start()
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    clickhouse = ClickHouseSettings(dsn=f"chdb:{(data / 'chdb').resolve()}")
    zones = ("de", "fr", "gb")  # `up`'s default zones and host names
    traced = {f"sim-{zones[i % 3]}-{i}".encode() for i in range(min(args.hosts, args.traced))}
    records = Records(kafka, traced)
    records.start()
    usage = Usage(psutil.Process(up.pid))
    deadline = time.monotonic() + args.warmup
    first_row_ms = first_row(clickhouse, deadline)
    while time.monotonic() < deadline:
        usage.sample_rss()
        time.sleep(1)
    t1, c1 = time.time() * 1000, count(clickhouse, "SELECT count() FROM llcr.gpu_samples")
    usage.begin()
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        usage.sample_rss()
        time.sleep(1)
    usage.end()
    t2, c2 = time.time() * 1000, count(clickhouse, "SELECT count() FROM llcr.gpu_samples")
    time.sleep(5)  # the records of samples up to t2 reach the bench's consumer
    records.stop()
    window = (t1, t2)
    per_sample = provisional_latencies(records, clock, window)
    published = [
        (produced - wall) / 1000
        for end, produced in records.published
        if window[0] <= (wall := clock.wall(end)) <= window[1]
    ]
    finals = [
        (produced - clock.wall(r["hour_start_ms"] + HOUR_MS)) / 1000
        for produced, r in records.finals
        if t1 <= produced <= t2
    ]
    up.send_signal(signal.SIGINT)  # as Ctrl-C: `up` stops its processes, chDB stays
    up.wait(120)
    stored = run_query(
        clickhouse,
        "SELECT toUnixTimestamp64Milli(end), toUnixTimestamp64Milli(ingested_at) "
        f"FROM llcr.gpu_samples WHERE ingested_at BETWEEN fromUnixTimestamp64Milli({int(t1)}) "
        f"AND fromUnixTimestamp64Milli({int(t2)})",
    ).rows
    stored_samples = [(ingested - clock.wall(end)) / 1000 for end, ingested in stored]
    stored = run_query(
        clickhouse,
        "SELECT toUnixTimestamp64Milli(hour_start), toUnixTimestamp64Milli(ingested_at) "
        "FROM llcr.emissions_hourly WHERE status = 'final' AND ingested_at BETWEEN "
        f"fromUnixTimestamp64Milli({int(t1)}) AND fromUnixTimestamp64Milli({int(t2)})",
    ).rows
    stored_final = [(ingested - clock.wall(hour + HOUR_MS)) / 1000 for hour, ingested in stored]
    seconds = (t2 - t1) / 1000
    grace_s = max(5.0, args.speed) / args.speed
    offered = args.hosts * args.gpus / max(0.02, 10.0 / args.speed)
    print(
        f"\nllcr up: {args.hosts} sim hosts x {args.gpus} GPUs at {args.speed:g}x, "
        f"{args.duration:g} s measured after {args.warmup:g} s; set: {args.set or 'defaults'}"
    )
    print(f"(sample -> provisional latency: every sample of {len(traced)} host(s))")
    print(f"samples stored in ClickHouse: {(c2 - c1) / seconds:,.0f}/s (offered {offered:,.0f}/s)")
    print("latency (s)                              n        p50      p99      max")
    for label, values in (
        ("sample -> on the samples topic (agent)", published),
        ("sample -> provisional record (topic)", per_sample),
        ("sample -> its own ClickHouse row", stored_samples),
        ("hour end -> final record (topic)", finals),
        ("hour end -> final row (ClickHouse)", stored_final),
    ):
        print(
            f"{label:<38} {len(values):>7} {pct(values, 50):>8.2f} {pct(values, 99):>8.2f} "
            f"{max(values, default=float('nan')):>8.2f}"
        )
    print(f"(grace is {grace_s:.2f} s of wall time at this speed; goal: final <= grace + 2 s)")
    print(
        f"cold start: first provisional record {(records.first_live_ms - launched_ms) / 1000:.1f}"
        f" s, first ClickHouse emission row {(first_row_ms - launched_ms) / 1000:.1f} s after "
        "the command"
    )
    print("process                  n   CPU cores   peak RSS MiB (per process)")
    for name, n, cpu, rss in usage.table(seconds):
        print(f"{name:<22} {n:>3} {cpu:>10.2f} {rss:>12.0f}")
    print(f"(machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f})")
    if min(per_sample, default=0) < -0.05:
        raise SystemExit("negative latencies: the clocks disagree")


if __name__ == "__main__":
    main()
