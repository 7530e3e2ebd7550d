"""A broker that stalls (SIGSTOP, then SIGCONT) under agent load: every sample reaches a
final hour once, and the agents and the worker carry on afterwards (issue 23).

Before, an agent's idempotent producer that timed out records during a stall of a minute
was fenced for good by Tansu (``PRODUCER_FENCED`` on every retry): the agents never
delivered again and stopped with hundreds of batches in their spools.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from schemas.admin import create_topics
from schemas.settings import KafkaSettings
from schemas.topics import spec
from streams.embedded.broker import Broker
from streams.topic_reader import end_offsets
from tests.integration.test_matching_worker import latest, worker
from tests.kafka_read import read_topic
from tests.reference_matching import reference

HOSTS = 2
CLI = "import sys; sys.argv[0] = 'llcr'; from schemas.cli import main; main()"


@contextmanager
def agent(kafka: KafkaSettings, tmp_path: Path, host: str) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "LLCR_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "LLCR_HOST": host,
        "LLCR_SPOOL_DIR": str(tmp_path / host),
    }
    args = ["agent", "gpu", "--source", "sim", "--gpus", "2", "--zone", "DE", "--site", "s1"]
    args += ["--start", "2023-06-01T00:00:00", "--speed", "60", "--seed", host[-1]]
    log = (tmp_path / f"{host}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, *args], env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def samples_on_topic(kafka: KafkaSettings) -> int:
    topic = kafka.topics.name("samples")
    parts = [(topic, p) for p in range(spec("samples").partitions)]
    return sum(end_offsets(kafka.librdkafka(), parts).values())


@pytest.mark.timeout(900)
@pytest.mark.parametrize("stall_s", [60, 300])
def test_a_broker_stall_under_agent_load_loses_nothing_and_doubles_nothing(
    tmp_path: Path, stall_s: int
) -> None:
    with Broker(log_path=tmp_path / "broker.log") as broker, ExitStack() as stack:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix=f"stall{stall_s}.")
        create_topics(kafka.librdkafka(), kafka.topic_prefix)
        stack.enter_context(worker(kafka, tmp_path))
        agents = [stack.enter_context(agent(kafka, tmp_path, f"host-{i}")) for i in range(HOSTS)]
        deadline = time.monotonic() + 60
        while samples_on_topic(kafka) < 10 * HOSTS:  # the agents deliver
            assert time.monotonic() < deadline, "the agents never delivered"
            time.sleep(0.5)

        pid = broker._process.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(stall_s)  # the stall itself is what is tested: it lasts this long
        finally:
            os.kill(pid, signal.SIGCONT)
        before = samples_on_topic(kafka)
        # the agents drain what they spooled in the stall, and go on sampling
        deadline = time.monotonic() + 180
        while samples_on_topic(kafka) < before + stall_s * HOSTS // 2:
            assert time.monotonic() < deadline, (
                f"agents did not catch up after the stall: {samples_on_topic(kafka)} batches"
            )
            time.sleep(1)
        for process in agents:
            process.send_signal(signal.SIGTERM)
        for i, process in enumerate(agents):
            assert process.wait(60) == 0
            out = (tmp_path / f"host-{i}.log").read_text()
            assert ", 0 left in the spool" in out, out[-2000:]
        total = samples_on_topic(kafka)

        batches = read_topic(
            kafka.bootstrap_servers,
            kafka.topics.name("samples"),
            "gpu_sample_batch",
            total,
            partitions=spec("samples").partitions,
            timeout_s=60,
        )
        unique: dict[tuple[str, int], Any] = {}
        for batch in batches:
            for s in batch["samples"]:
                seen = unique.setdefault((s["gpu_uuid"], s["seq"]), (batch["host"], s))
                assert seen[1] == s, "one sequence number carried two samples"
        by_gpu: dict[str, list[int]] = defaultdict(list)
        for uuid, seq in unique:
            by_gpu[uuid].append(seq)
        assert len(by_gpu) == 2 * HOSTS
        for uuid, seqs in by_gpu.items():
            assert sorted(seqs) == list(range(len(seqs))), f"{uuid}: samples lost"
        for i in range(HOSTS):
            out = (tmp_path / f"host-{i}.log").read_text()
            sampled = sum(1 for (h, _) in unique.values() if h == f"host-{i}")
            assert f"sampled {sampled} sample(s)" in out, out[-2000:]

        ref = reference([(h, "DE", s) for h, s in unique.values()], [])
        records = latest(kafka, kafka.topics, len(ref), quiet_s=8, timeout_s=180)
        got = {
            (r["hour_start_ms"], r["host"], r["gpu_uuid"], r["job_id"], r["tenant"]): r
            for r in records.values()
        }
        assert set(got) == set(ref)
        for key, row in ref.items():
            assert got[key]["energy_mj"] == pytest.approx(row.energy_mj, abs=len(ref)), key
        energy = sum(j["energy_mj"] for _, s in unique.values() for j in s["jobs"])
        assert sum(r["energy_mj"] for r in records.values()) == energy  # to the mJ, once
