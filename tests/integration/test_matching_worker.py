"""The matching worker (`llcr worker`, faust) against a real broker, checked against the
independent reference: real 2023 intensity, multi-day GPU traces, shuffled and duplicated
arrival, intensity hours late, SIGKILL under load, dead letters."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from agents.gpu.agent import GpuAgent, HostIdentity
from agents.gpu.model import JobLabels
from agents.gpu.sources import SimSource
from agents.grid.run import import_files
from agents.settings import GridFeederSettings
from schemas.admin import create_topics
from schemas.blocks import to_block
from schemas.codec import Codec
from schemas.records import GpuSample, GpuSampleBatch, GridIntensityEvent, SampleSource
from schemas.settings import KafkaSettings
from schemas.topics import Topics, spec
from streams.embedded.broker import Broker
from streams.matching.lifecycle import HostState, ingest, slice_of
from streams.matching.run import changelog_specs
from streams.matching.support import slice_key
from streams.settings import WorkerSettings
from tests.examples import EXAMPLES
from tests.kafka_read import read_topic, read_until
from tests.reference_matching import reference
from tests.sink_run import stop_process


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """These faust workers get a broker of their own, apart from the other tests' groups."""
    with Broker(log_path=tmp_path_factory.mktemp("matching-broker") / "tansu.log") as running:
        yield running


ROOT = Path(__file__).parent.parent.parent
T0 = 1_672_531_200_000  # 2023-01-01T00:00Z
HOUR_MS = 3_600_000
codec = Codec()


def trace(
    hosts: int,
    gpus: int,
    hours: float,
    step_s: int,
    per_batch: int,
    *,
    t0: int = T0,
    source: SampleSource = "sim",
) -> list[tuple[bytes, bytes, dict[str, Any]]]:
    """(key, encoded batch, batch) of simulated hosts; samples every ``step_s`` seconds,
    labelled ``source`` (``replay``: as if a recorded trace were replayed)."""
    out = []
    for h in range(hosts):
        host = f"host-{h}"
        sim = SimSource(gpus=gpus, seed=h, host=host)
        agent = GpuAgent(
            HostIdentity(host, host, "fra-1", "DE", source),
            sim,
            lambda pid: JobLabels(f"job-{pid % 3}", "acme" if pid % 2 else "globex"),
        )
        for tick in range(int(hours * 3600 / step_s) + 1):
            agent.sample(t0 + tick * step_s * 1000)
            if tick % per_batch == 0:
                batch = agent.take_batch(t0 + tick * step_s * 1000)
                if batch:
                    out.append((host.encode(), mixed(batch, len(out)), batch))
        batch = agent.take_batch(t0 + int(hours * 3600) * 1000)
        if batch:
            out.append((host.encode(), mixed(batch, len(out)), batch))
    return out


def mixed(batch: GpuSampleBatch, n: int) -> bytes:
    """The n-th message of a trace: a v1 batch or, every second one, a v2 block (a fleet
    half upgraded), so every worker test reads a mixed topic."""
    if n % 2:
        return codec.encode("gpu_sample_block", to_block(batch))
    return codec.encode("gpu_sample_batch", batch)


def produce(
    kafka: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes | None]]
) -> None:
    producer = Producer({**kafka.librdkafka(), "partitioner": "murmur2_random", "linger.ms": "20"})
    for key, value in messages:
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    assert producer.flush(30) == 0


def intensity(
    kafka: KafkaSettings, tmp_path: Path, hours: int, already: int = 0
) -> list[GridIntensityEvent]:
    """The first ``hours`` of the shipped DE 2023 file, imported by the grid feeder
    (``already``: events put on the topic before, left out of what is returned)."""
    lines = (ROOT / "agents/data/grid/DE_2023_hourly.csv").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "DE_2023_hourly.csv"
    path.write_text("\n".join(lines[: hours + 1]) + "\n", encoding="utf-8")
    settings = GridFeederSettings(kafka=kafka, state_dir=tmp_path / "grid")
    assert import_files(settings, [path], speed=0, stop=threading.Event()).events == 2 * hours
    read = read_topic(
        kafka.bootstrap_servers,
        kafka.topics.name("intensity"),
        "grid_intensity",
        2 * hours + already,
        partitions=spec("intensity").partitions,
    )
    return [e for e in read if not e["event_id"].startswith("absurd:")]  # type: ignore[misc]


@contextmanager
def worker(
    kafka: KafkaSettings, tmp_path: Path, name: str = "w", loglevel: str | None = None, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    variables = {
        **os.environ,
        "LLCR_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "LLCR_APP_ID": f"llcr-worker-{kafka.topic_prefix.strip('.')}",
        "LLCR_DATA_DIR": str(tmp_path / "worker"),
        # the worker defaults (6 / 1 / 6 s): tighter ones rebalance over and over when a
        # loaded CI machine delays heartbeats
        "LLCR_GRACE_S": "0",
        "LLCR_MAX_WAIT_S": "3",
        "LLCR_TICK_S": "0.5",
        "LLCR_ZONES": '["DE"]',
        # these tests' hosts are simulated: this deployment allows sim samples explicitly
        "LLCR_ACCEPT_SOURCES": '["nvml","replay","sim"]',
        **env,
    }
    code = "import sys; sys.argv[0] = 'llcr'; from schemas.cli import main; main()"
    log = (tmp_path / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "worker",
            "--loglevel",
            loglevel or os.environ.get("LLCR_TEST_WORKER_LOGLEVEL", "warning"),
        ],
        env=variables,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        stop_process(process)
        log.close()


def hourly(
    kafka: KafkaSettings, topics: Topics, expected: int, *, timeout_s: float, settle_s: float
) -> list[dict[str, Any]]:
    """Every record on the hourly emissions topic so far (all revisions)."""
    partitions = spec("emissions_hourly").partitions
    topic = topics.name("emissions_hourly")
    return read_topic(
        kafka.bootstrap_servers,
        topic,
        "emissions_hourly",
        expected,
        partitions=partitions,
        timeout_s=timeout_s,
        settle_s=settle_s,
    )


def loaded(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path, intensity_hours: int, **shape: Any
) -> tuple[list[GridIntensityEvent], list[tuple[bytes, bytes, dict[str, Any]]], int]:
    """Intensity and a trace on the broker: (events, batches, reference key count)."""
    events = intensity(kafka, tmp_path, hours=intensity_hours)
    batches = trace(**shape)
    produce(kafka, topics.name("samples"), [(k, v) for k, v, _ in batches])
    return events, batches, len(reference(samples_of(batches), events))


def latest(
    kafka: KafkaSettings, topics: Topics, keys: int, quiet_s: float = 6.0, timeout_s: float = 120
) -> dict[str, dict[str, Any]]:
    """The newest revision of every hourly record, once ``keys`` record ids were seen and
    nothing new arrived for ``quiet_s``."""
    records = read_until(
        kafka.bootstrap_servers,
        topics.name("emissions_hourly"),
        "emissions_hourly",
        lambda seen: len({r["record_id"] for r in seen}) >= keys,
        partitions=spec("emissions_hourly").partitions,
        timeout_s=timeout_s,
        quiet_s=quiet_s,
    )
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["record_id"], []).append(record)
    for versions in by_id.values():
        revisions = [r["revision"] for r in versions]
        assert sorted(set(revisions)) == list(range(max(revisions) + 1)), revisions  # no gaps
        assert {r["status"] for r in versions if r["revision"] > 0} <= {"revised"}
    return {rid: max(versions, key=lambda r: r["revision"]) for rid, versions in by_id.items()}


def samples_of(
    batches: list[tuple[bytes, bytes, dict[str, Any]]],
) -> list[tuple[str, str, GpuSample]]:
    return [(b["host"], b["zone"], s) for _, _, b in batches for s in b["samples"]]


def assert_equal_to_reference(
    records: dict[str, dict[str, Any]],
    batches: list[tuple[bytes, bytes, dict[str, Any]]],
    events: list[GridIntensityEvent],
) -> None:
    ref = reference(samples_of(batches), events)
    got = {
        (r["hour_start_ms"], r["host"], r["gpu_uuid"], r["job_id"], r["tenant"]): r
        for r in records.values()
    }
    assert set(got) == set(ref)
    for key, row in ref.items():
        record = got[key]
        assert record["average"] is not None, key
        assert record["average"]["emissions_g"] == pytest.approx(row.average_g, rel=1e-9)
        assert record["average"]["variant"] == "lifecycle"
        assert record["average"]["providers"] == ["csv:DE_2023_hourly.csv"]
        assert record["energy_mj"] == pytest.approx(row.energy_mj, abs=len(ref))  # int split
        assert record["marginal"] is None  # no marginal signal was published
    total = sum(j["energy_mj"] for _, _, s in samples_of(batches) for j in s["jobs"])
    assert sum(r["energy_mj"] for r in records.values()) == total  # exact, to the mJ


def test_multi_day_trace_on_real_2023_intensity_equals_the_reference(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    events, batches, keys = loaded(
        kafka, topics, tmp_path, 52, hosts=2, gpus=2, hours=49.5, step_s=60, per_batch=10
    )
    with worker(kafka, tmp_path):
        records = latest(kafka, topics, keys)
    assert_equal_to_reference(records, batches, events)
    # the trace stops at 49:30: its last hour closed on the clock (a quiet host), since no
    # sample pushed the watermark past its end
    last = max(r["hour_start_ms"] for r in records.values())
    assert last == T0 + 49 * HOUR_MS and all(r["status"] == "final" for r in records.values())


def test_shuffled_duplicated_and_late_intensity_give_the_same_numbers(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    batches = trace(hosts=2, gpus=2, hours=6, step_s=30, per_batch=20, source="replay")
    shuffled = list(batches) + random.Random(7).sample(batches, len(batches) // 3)  # duplicates
    random.Random(8).shuffle(shuffled)
    bad = [
        (b"host-x", b"\x00garbage"),
        (
            b"host-0",
            codec.encode("gpu_sample_batch", {**batches[0][2], "zone": "XX", "batch_id": "x"}),
        ),
        (  # simulated energy is not priced by a worker that did not allow it
            b"host-0",
            codec.encode("gpu_sample_batch", {**batches[1][2], "source": "sim", "batch_id": "s"}),
        ),
        (b"host-0", None),  # a tombstone
    ]
    # absurd intensity with a revision that would win over every real value: refused
    absurd: list[tuple[bytes | None, bytes | None]] = []
    for variant in ("direct", "lifecycle"):
        for change in (
            {"intensity_g_per_kwh": float("nan")},
            {"intensity_g_per_kwh": -500.0},
            {"intensity_g_per_kwh": 1e6},
            {"intensity_g_per_kwh": 300.0, "period_start_ms": 0},  # from 1970 on
        ):
            event = {
                **EXAMPLES["grid_intensity"],
                "zone": "DE",
                "variant": variant,
                "revision": 99,
                "event_id": f"absurd:{variant}:{change}",
                "period_start_ms": T0,
                "period_end_ms": T0 + 3_600_000,
                **change,
            }
            absurd.append((b"DE", codec.encode("grid_intensity", event)))
    produce(kafka, topics.name("samples"), [(k, v) for k, v, _ in shuffled] + bad)
    with worker(kafka, tmp_path, LLCR_ACCEPT_SOURCES='["nvml","replay"]'):
        unpriced = latest(kafka, topics, len(reference(samples_of(batches), [])))
        assert all(r["average"] is None for r in unpriced.values())  # no intensity yet
        produce(kafka, topics.name("intensity"), absurd)
        events = intensity(kafka, tmp_path, hours=8, already=len(absurd))
        records = latest(kafka, topics, len(unpriced))
    assert len(events) == 16
    assert_equal_to_reference(records, batches, events)
    assert all(r["status"] == "revised" and r["revision"] >= 1 for r in records.values())
    letters = read_topic(
        kafka.bootstrap_servers,
        topics.name("dead_letters"),
        "dead_letter",
        12,
        partitions=spec("dead_letters").partitions,
    )
    assert sorted(d["reason_code"] for d in letters) == sorted(
        ["corrupt", "corrupt", "source_not_accepted", "unknown_zone"]
        + 2 * ["intensity_not_finite", "intensity_negative", "intensity_above_ceiling"]
        + 2 * ["time_out_of_range"]  # 1970 is outside every bound before its length is
    )
    assert {d["component"] for d in letters} == {"worker.matching"}


def test_a_cold_worker_closes_no_hour_before_reading_the_intensity_backlog(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    """A year of intensity waits on the topic, and samples for its last hours. The samples'
    watermark closes their hours at the first tick, and their prices are the last of the
    backlog to be read: without the start-up hold they closed unpriced and came back as
    revisions."""
    events = intensity(kafka, tmp_path, hours=8760)
    batches = trace(hosts=1, gpus=2, hours=2, step_s=60, per_batch=10, t0=T0 + 8756 * HOUR_MS)
    produce(kafka, topics.name("samples"), [(k, v) for k, v, _ in batches])
    with worker(kafka, tmp_path):
        records = latest(kafka, topics, len(reference(samples_of(batches), events)))
    assert_equal_to_reference(records, batches, events)
    assert {r["status"] for r in records.values()} == {"final"}


def test_sigkill_of_a_busy_worker_changes_no_final_number(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    """The trace reaches the broker in three parts by time: the worker closes hours of the
    first, is killed while it reads the second, and a new worker reads the third. (With the
    whole trace on the topic first, a fast machine closed every hour before the test could
    kill it.)"""
    events = intensity(kafka, tmp_path, hours=14)
    batches = trace(hosts=4, gpus=2, hours=12, step_s=10, per_batch=6)
    keys = len(reference(samples_of(batches), events))
    samples = topics.name("samples")

    def part(start_h: int, end_h: int) -> list[tuple[bytes | None, bytes | None]]:
        return [
            (k, v)
            for k, v, b in batches
            if T0 + start_h * HOUR_MS <= b["samples"][-1]["end_ms"] < T0 + end_h * HOUR_MS
        ]

    first_part, second_part, rest = part(0, 4), part(4, 8), part(8, 13)
    assert len(first_part) + len(second_part) + len(rest) == len(batches)
    produce(kafka, samples, first_part)
    with worker(kafka, tmp_path, name="first") as first:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(hourly(kafka, topics, 0, timeout_s=2, settle_s=0.5)) >= 5:
                break
        produce(kafka, samples, second_part)  # the worker is busy with these when it dies
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    before = hourly(kafka, topics, 0, timeout_s=2, settle_s=0.5)
    log = (tmp_path / "first.log").read_text()[-500:]
    assert 5 <= len(before) < keys, f"{len(before)} records before the kill; log {log}"
    produce(kafka, samples, rest)
    with worker(kafka, tmp_path, name="second"):
        records = latest(kafka, topics, keys, timeout_s=90)
    assert_equal_to_reference(records, batches, events)


def test_two_workers_in_one_group_across_a_rebalance_agree_with_the_reference(
    tmp_path: Path,
) -> None:
    # A fresh broker, so the group starts from a clean coordinator. (This test used to lose
    # about a third of the hours in some runs: the worker that took over a partition
    # recovered a state older than the committed offsets; see "Crash and rebalance
    # safety" in docs/matching.md.)
    with Broker(log_path=tmp_path / "tansu.log") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix="two.")
        create_topics(kafka.librdkafka(), kafka.topic_prefix)
        _two_workers(kafka, kafka.topics, tmp_path)


def _two_workers(kafka: KafkaSettings, topics: Topics, tmp_path: Path) -> None:
    events = intensity(kafka, tmp_path, hours=14)
    batches = trace(hosts=6, gpus=2, hours=12, step_s=30, per_batch=20)
    keys = len(reference(samples_of(batches), events))
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    with worker(kafka, tmp_path, name="a", loglevel="info", LLCR_DATA_DIR=str(tmp_path / "a")):
        recovered(a_log, 1)  # the first worker owns every partition
        with worker(kafka, tmp_path, name="b", loglevel="info", LLCR_DATA_DIR=str(tmp_path / "b")):
            recovered(a_log, 2)  # the second joined: a rebalance, and both recovered
            recovered(b_log, 1)
            produce(kafka, topics.name("samples"), [(k, v) for k, v, _ in batches])
            records = latest(kafka, topics, keys)
    assert_equal_to_reference(records, batches, events)
    assert len({r["host"] for r in records.values()}) == 6
    assert "rebalance: partitions revoked" in a_log.read_text()


def recovered(log: Path, times: int, timeout_s: float = 90) -> None:
    """Wait until the worker writing ``log`` finished ``times`` rebalances (the tables of
    its assignment recovered)."""
    line = "rebalance: partitions assigned and recovered"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.read_text(errors="replace").count(line) >= times:
            return
        time.sleep(0.2)
    raise AssertionError(f"{log.name}: not {times} rebalance(s) in {timeout_s:.0f} s")


def test_a_restarted_worker_recovers_every_record_of_the_last_changelog_batch(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    """What a worker killed right after a commit leaves: its slices on the changelog, the
    newest ones in one record batch, and no samples left to consume. A restart must
    recover all of them. (Tansu answers ListOffsets(latest) with the newest batch's base
    offset + 1; faust's recovery took that for the end and stopped after the first record
    of the batch, so the hours in the rest of it were lost for good.)"""
    events = intensity(kafka, tmp_path, hours=4)
    batches = trace(hosts=1, gpus=2, hours=2.5, step_s=60, per_batch=1000)
    state = HostState("host-0", partition=3)
    for _, _, batch in batches:
        for sample in batch["samples"]:
            assert ingest(state, batch["zone"], batch["site"], sample)
    changed, _ = state.take_changes()
    assert len(changed) == 3
    settings = WorkerSettings(kafka=kafka, app_id=f"llcr-worker-{kafka.topic_prefix.strip('.')}")
    create_topics(kafka.librdkafka(), "", changelog_specs(settings))
    changelog = changelog_specs(settings)[0].name("")
    producer = Producer({**kafka.librdkafka(), "linger.ms": "200"})  # one record batch
    for hour in changed:
        value = pickle.dumps(slice_of(state, hour), protocol=pickle.HIGHEST_PROTOCOL)
        producer.produce(changelog, key=slice_key("host-0", hour), value=value, partition=3)
    assert producer.flush(30) == 0
    with worker(kafka, tmp_path):
        records = latest(kafka, topics, len(reference(samples_of(batches), events)))
    assert_equal_to_reference(records, batches, events)
    assert {r["hour_start_ms"] for r in records.values()} == set(changed)
