"""Fuzz the input topics against real processes (issue 23): 10,000 mutated sample batches
and 10,000 mutated intensity events, interleaved with good data, into a running `llcr
worker` and `llcr sink` (chDB). Afterwards both are alive, every mutation that is not Avro
is one dead letter, the rest were refused with a reason or accepted where they harm
nothing, the good hosts' hours equal the independent reference computed on the good
samples alone, and ClickHouse holds every good sample once, unflagged, and the same hours.

The mutations live in their own zone (FR) and hosts (``fuzz-*``); a mutation that would
decode as a good host's or the good zone's data is drawn again, so a mutation that is
*valid* (a plausible sample, a plausible price) is harmless by construction and the good
totals must not move by a millijoule or a gram.
"""

from __future__ import annotations

import copy
import math
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.blocks import to_block
from schemas.bounds import MAX_DEAD_VALUE_BYTES
from schemas.codec import Codec, SchemaName
from schemas.settings import KafkaSettings
from schemas.topics import Topics, spec
from tests.examples import EXAMPLES
from tests.integration.test_matching_worker import intensity, trace, worker
from tests.integration.test_up import query_rows
from tests.reference_matching import reference
from tests.sink_run import stop_process, wait_for

MUTATIONS = 10_000
CLI = "import sys; sys.argv[0] = 'llcr'; from schemas.cli import main; main()"
FUZZ_T0 = 1_672_617_600_000  # 2023-01-02T00:00Z, after the good trace
codec = Codec()

INTS = [-1, -5, 0, 1, 2**31 - 1, -(2**31), 2**53, 2**62, -(2**62), 2**63 - 1, -(2**63)]
FLOATS = [math.nan, math.inf, -math.inf, -1.0, -1e308, 1e308, 1e13, 5e-324, -0.0]
TEXTS = ["", "\x00", "DE\x00", "x" * 129, "é" * 200, "../../etc/passwd", "'; DROP TABLE x; --"]
HUGE_TEXT = "x" * 2_000_000


def leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, (*path, k))
    elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
        for i, v in enumerate(obj):
            yield from leaves(v, (*path, i))
    else:
        yield path, obj


def put(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


def hostile(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool | list):
        return value
    if isinstance(value, int):
        return rng.choice(INTS)
    if isinstance(value, float):
        return rng.choice(FLOATS)
    if isinstance(value, str) or value is None:
        return HUGE_TEXT if rng.random() < 0.002 else rng.choice(TEXTS)
    return value


def byte_mutation(data: bytes, rng: random.Random) -> bytes | None:
    kind = rng.randrange(6)
    if kind == 0:
        return data[: rng.randrange(len(data))]  # truncated
    if kind == 1:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == 2:
        return data + rng.randbytes(rng.randint(1, 64))
    if kind == 3:
        return rng.randbytes(rng.randint(1, 512))
    if kind == 4:
        return None  # a tombstone
    return b""


def structural(record: dict[str, Any], schema: SchemaName, rng: random.Random) -> None:
    if schema != "gpu_sample_batch":
        return
    sample = record["samples"][0]
    kind = rng.randrange(5)
    if kind == 0:
        record["samples"] = []
    elif kind == 1:
        sample["jobs"] = [dict(sample["jobs"][0], energy_mj=0, share=0.0)] * 65
    elif kind == 2:
        sample["jobs"] = []
    elif kind == 3:
        record["samples"] = [sample, copy.deepcopy(sample)]  # the same seq twice
    elif rng.random() < 0.01:
        record["samples"] = [sample] * 20_001  # more samples than a batch may hold


def decodes(schema: SchemaName, data: bytes | None) -> bool:
    try:
        codec.decode(schema, data)
    except Exception:
        return False
    return True


def harms_good_data(schema: SchemaName, data: bytes | None) -> bool:
    """Whether a mutation decodes as the good data's host or zone (then it is drawn again)."""
    try:
        decoded = codec.decode(schema, data)
    except Exception:
        return False
    if schema == "gpu_sample_batch":
        return decoded["zone"] == "DE" or decoded["host"].startswith("host-")
    return decoded["zone"] == "DE"


def mutations(schema: SchemaName, template: dict[str, Any], seed: int) -> list[bytes | None]:
    rng = random.Random(seed)
    out: list[bytes | None] = []
    while len(out) < MUTATIONS:
        record = copy.deepcopy(template)
        i = len(out)
        if schema == "gpu_sample_batch":  # each one its own plausible place in time
            record["host"] = f"fuzz-{i % 7}"
            sample = record["samples"][0]
            sample.update(seq=i, start_ms=FUZZ_T0 + i * 10_000, end_ms=FUZZ_T0 + i * 10_000 + 1000)
        else:
            record["period_start_ms"] = FUZZ_T0 + (i % 500) * 3_600_000
            record["period_end_ms"] = record["period_start_ms"] + 3_600_000
            record["event_id"] = f"fuzz:{i}"
        roll = rng.random()
        if roll < 0.6:
            path, value = rng.choice(list(leaves(record)))
            put(record, path, hostile(value, rng))
        elif roll < 0.75:
            structural(record, schema, rng)
        try:
            data: bytes | None = encoded(schema, record, i, rng)
        except Exception:  # outside what Avro can carry: mutate the bytes instead
            data = codec.encode(schema, template)
            roll = 1.0
        if roll >= 0.75:
            data = byte_mutation(data or b"", rng)
        if not harms_good_data(schema, data):
            out.append(data)
    return out


def encoded(schema: SchemaName, record: dict[str, Any], i: int, rng: random.Random) -> bytes:
    """Every second samples mutation goes out as a v2 block, a third of those with its
    rows themselves mutated (a byte changed, rows cut or grown)."""
    if schema != "gpu_sample_batch" or i % 2 == 0:
        return codec.encode(schema, record)
    block: dict[str, Any] = dict(to_block(record))  # type: ignore[arg-type]
    if rng.random() < 0.3:
        field = rng.choice(["sample_rows", "share_rows"])
        rows = bytearray(block[field])
        kind = rng.randrange(3)
        if kind == 0 and rows:
            rows[rng.randrange(len(rows))] = rng.randrange(256)
        elif kind == 1:
            del rows[rng.randrange(len(rows) + 1) :]
        else:
            rows += rng.randbytes(rng.choice([1, 34, 78]))
        block[field] = bytes(rows)
    return codec.encode("gpu_sample_block", block)


def fuzz_templates() -> tuple[dict[str, Any], dict[str, Any]]:
    batch = copy.deepcopy(EXAMPLES["gpu_sample_batch"])
    batch.update(zone="FR", source="replay")
    batch["samples"] = batch["samples"][:1]
    event = copy.deepcopy(EXAMPLES["grid_intensity"])
    event.update(zone="FR")
    return batch, event


def produce(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes | None]]) -> None:
    """Like any producer a hostile client can configure: messages up to 10 MB."""
    producer = Producer({**kafka.librdkafka(), "message.max.bytes": "10000000", "linger.ms": "20"})
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


class TopicWatch:
    """Every record of a topic so far, read from its start on a thread."""

    def __init__(self, kafka: KafkaSettings, topic: str, schema: SchemaName, parts: int) -> None:
        self.records: list[dict[str, Any]] = []
        self._schema = schema
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "w"})
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(parts)])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is not None and message.error() is None:
                self.records.append(codec.decode(self._schema, message.value()))

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest revision of every hourly record."""
        out: dict[str, dict[str, Any]] = {}
        for record in list(self.records):
            seen = out.get(record["record_id"])
            if seen is None or record["revision"] >= seen["revision"]:
                out[record["record_id"]] = record
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@contextmanager
def sink(kafka: KafkaSettings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`llcr sink` on its own chDB store, as a process of its own (what `up` runs)."""
    env = {
        **os.environ,
        "LLCR_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "LLCR_GROUP_ID": f"sink-{kafka.topic_prefix.strip('.')}",
        "LLCR_BATCH_MAX_WAIT_S": "0.3",
    }
    argv = [sys.executable, "-c", CLI, "sink", "--dsn", f"chdb:{tmp_path / 'store'}"]
    with (tmp_path / "sink.log").open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            stop_process(process, 30)


@pytest.mark.timeout(900)
def test_ten_thousand_mutations_per_input_topic_leave_every_process_alive_and_good_hours_exact(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path, unique: str
) -> None:
    events = intensity(kafka, tmp_path, hours=6)
    good = trace(hosts=2, gpus=2, hours=3, step_s=30, per_batch=10)
    batch_template, event_template = fuzz_templates()
    bad_samples = mutations("gpu_sample_batch", batch_template, seed=1)
    bad_events = mutations("grid_intensity", event_template, seed=2)

    # good batches keep their order per host; the mutations fall in between at random
    rng = random.Random(3)
    stream: list[tuple[bytes, bytes | None]] = [(b"fuzz", v) for v in bad_samples]
    for key, value, _ in good:
        stream.insert(rng.randrange(len(stream) + 1), (key, value))
    good_positions = [i for i, (k, _) in enumerate(stream) if k != b"fuzz"]
    assert good_positions == sorted(good_positions)

    watch = TopicWatch(
        kafka,
        topics.name("emissions_hourly"),
        "emissions_hourly",
        spec("emissions_hourly").partitions,
    )
    dead = TopicWatch(
        kafka, topics.name("dead_letters"), "dead_letter", spec("dead_letters").partitions
    )
    dsn = f"chdb:{tmp_path / 'store'}"
    try:
        with (
            sink(kafka, tmp_path) as sinking,
            worker(kafka, tmp_path, LLCR_ZONES='["DE","FR"]') as process,
        ):
            produce(kafka, topics.name("intensity"), [(b"fuzz", v) for v in bad_events])
            produce(kafka, topics.name("samples"), stream)

            good_samples = [(b["host"], b["zone"], s) for _, _, b in good for s in b["samples"]]
            ref = reference(good_samples, events)

            def good_hours() -> dict[tuple[Any, ...], dict[str, Any]]:
                return {
                    (r["hour_start_ms"], r["host"], r["gpu_uuid"], r["job_id"], r["tenant"]): r
                    for r in watch.latest().values()
                    if r["host"].startswith("host-")
                }

            def exact() -> bool:
                got = good_hours()
                return set(got) == set(ref) and all(
                    got[k]["energy_mj"] == pytest.approx(v.energy_mj, abs=len(ref))
                    and got[k]["average"] is not None
                    and got[k]["average"]["emissions_g"] == pytest.approx(v.average_g, rel=1e-9)
                    for k, v in ref.items()
                )

            wait_for(exact, timeout_s=600, what="the good hours to equal the reference")
            total = sum(j["energy_mj"] for _, _, s in good_samples for j in s["jobs"])
            assert sum(r["energy_mj"] for r in good_hours().values()) == total
            assert process.poll() is None, "the worker died"

            # every mutation that is not Avro any more is one codec dead letter, by offset
            sent: list[tuple[str, SchemaName, list[bytes | None]]] = [
                (topics.name("samples"), "gpu_sample_batch", bad_samples),
                (topics.name("intensity"), "grid_intensity", bad_events),
            ]
            undecodable = {name: sum(not decodes(k, v) for v in vs) for name, k, vs in sent}

            def codec_letters() -> dict[str, int]:
                ids: dict[str, set[str]] = {name: set() for name in undecodable}
                for letter in list(dead.records):
                    if letter["reason_code"] in ("corrupt", "unknown_schema", "wrong_schema"):
                        ids[letter["source_topic"]].add(letter["dead_letter_id"])
                return {name: len(found) for name, found in ids.items()}

            wait_for(
                lambda: codec_letters() == undecodable,
                timeout_s=120,
                what=f"codec dead letters {undecodable}",
            )
            letters = list(dead.records)
            assert all(len(letter["value"]) <= MAX_DEAD_VALUE_BYTES for letter in letters)
            reasons = {letter["reason_code"] for letter in letters}
            assert {"absurd_power", "field_too_long", "out_of_range", "time_out_of_range"} <= (
                reasons
            ), reasons
            assert process.poll() is None, "the worker died"

            # ClickHouse: every good sample once and unflagged, the good hours as priced
            good_kwh = total / 3.6e9
            want = [{"n": len(good_samples), "kwh": pytest.approx(good_kwh, rel=1e-12)}]

            def stored(sql: str) -> list[dict[str, Any]]:
                try:
                    return query_rows(dsn, sql)
                except subprocess.CalledProcessError:  # the sink is not serving yet
                    return []

            accepted = (
                "SELECT count() AS n, sum(energy_mj) / 3.6e9 AS kwh FROM llcr.gpu_samples_accepted "
                "WHERE host LIKE 'host-%'"
            )
            wait_for(lambda: stored(accepted) == want, timeout_s=300, what=f"samples {want}")
            hours = stored(
                "SELECT count() AS n, sum(energy_kwh) AS kwh FROM llcr.emissions_hourly FINAL "
                "WHERE host LIKE 'host-%'"
            )
            assert hours == [{"n": len(ref), "kwh": pytest.approx(good_kwh, rel=1e-9)}], hours
            flagged = stored(
                "SELECT count() AS n FROM llcr.gpu_samples_rejected WHERE host LIKE 'host-%'"
            )
            assert flagged == [{"n": 0}], flagged
            fuzzed = stored(
                "SELECT countIf(NOT isFinite(energy_kwh)) AS n FROM llcr.emissions_hourly FINAL"
            )
            assert fuzzed == [{"n": 0}], fuzzed  # nothing absurd was priced
            assert sinking.poll() is None, "the sink died"
            assert process.poll() is None, "the worker died"
    finally:
        watch.close()
        dead.close()
