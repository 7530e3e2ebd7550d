"""The GPU agent against a real broker: exact energy, gap-free sequences, no loss in outages."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from agents.gpu.agent import GpuAgent, HostIdentity
from agents.gpu.model import JobLabels
from agents.gpu.run import producer_factory, publish_pending, sample_encoder
from agents.gpu.sources import SimSource
from agents.publisher import Publisher, send_while_waiting
from agents.settings import GpuAgentSettings
from agents.spool import Spool
from schemas.admin import create_topics
from schemas.codec import Codec
from schemas.settings import KafkaSettings
from schemas.topics import spec
from streams.embedded.broker import Broker
from tests.kafka_read import read_topic

T0 = 1_700_000_000_000
codec = Codec()


def _read_all(
    bootstrap: str, topic: str, expected_batches: int, timeout_s: float = 30
) -> list[dict[str, Any]]:
    return read_topic(
        bootstrap,
        topic,
        "gpu_sample_batch",
        expected_batches,
        partitions=spec("samples").partitions,
        timeout_s=timeout_s,
    )


class _Host:
    """A sim host driven tick by tick on a simulated clock (1 s per tick)."""

    def __init__(self, kafka: KafkaSettings, spool_dir: Path) -> None:
        self.settings = GpuAgentSettings(
            kafka=kafka, spool_dir=spool_dir, host="h1", zone="DE", site="s1", source="sim"
        )
        self.sim = SimSource(gpus=4, seed=3, host="h1")
        self.start_counters = self.sim.counters()
        self.agent = GpuAgent(
            HostIdentity("h1", "h1", "s1", "DE", "sim"), self.sim, lambda pid: JobLabels("j")
        )
        self.spool = Spool(spool_dir / "batches", 10**8)
        self.publisher = Publisher(
            producer_factory(self.settings),
            kafka.topics.name("samples"),
            self.spool,
            retry_backoff_s=0.5,
        )
        self.tick = 0
        self.encode = sample_encoder(codec, self.settings.sample_format)  # blocks by default

    def run_ticks(self, ticks: int, real_sleep_s: float = 0.0) -> None:
        for _ in range(ticks):
            self.agent.sample(T0 + self.tick * 1000)
            if self.tick % 2 == 1:
                publish_pending(
                    self.agent,
                    self.encode,
                    self.publisher,
                    self.settings.spool_dir / "state.json",
                    T0,
                )
            self.publisher.pump(real_sleep_s)
            self.tick += 1

    def publish_rest(self) -> None:
        """What the agent does at shutdown: publish the intervals not yet batched."""
        publish_pending(
            self.agent, self.encode, self.publisher, self.settings.spool_dir / "state.json", T0
        )


def _check_exact(host: _Host, batches: list[dict[str, Any]]) -> None:
    unique: dict[tuple[str, int], dict[str, Any]] = {}
    for batch in batches:
        for sample in batch["samples"]:
            key = (sample["gpu_uuid"], sample["seq"])
            assert unique.setdefault(key, sample) == sample, (
                f"seq {key} carried different data twice"
            )
    for uuid, start in host.start_counters.items():
        seqs = sorted(seq for gpu, seq in unique if gpu == uuid)
        assert seqs == list(range(len(seqs))), f"{uuid}: sequence numbers have gaps"
        energy = sum(s["energy_mj"] for (gpu, _), s in unique.items() if gpu == uuid)
        assert energy == host.sim.counters()[uuid] - start


def test_published_energy_equals_the_sim_counters(
    kafka: KafkaSettings, topics: Any, tmp_path: Path
) -> None:
    host = _Host(kafka, tmp_path)
    host.run_ticks(40)  # 40 readings per GPU -> 39 intervals, published every 2nd tick
    assert host.publisher.flush(20)
    batches = _read_all(
        kafka.bootstrap_servers, topics.name("samples"), host.publisher.stats.delivered
    )
    assert len(batches) == 20 and sum(len(b["samples"]) for b in batches) == 4 * 39
    _check_exact(host, batches)
    host.spool.close()


def test_a_spool_backlog_drains_while_the_publisher_waits(
    kafka: KafkaSettings, topics: Any, tmp_path: Path
) -> None:
    """A backlog far over ``max_in_flight`` reaches the broker within one wait: the agents'
    wait loop pumps a busy publisher instead of sleeping after one pump (which sent at most
    ``max_in_flight`` records a wait: a feeder's backlog of a year took 44 s in `llcr up`)."""
    spool = Spool(tmp_path / "backlog", 10**8)
    spool.extend([(b"k", b"%d" % i) for i in range(3_000)])
    publisher = Publisher(
        producer_factory(
            GpuAgentSettings(kafka=kafka, spool_dir=tmp_path, host="h", zone="DE", site="s")
        ),
        topics.name("samples"),
        spool,
        max_in_flight=100,
    )
    stop = threading.Event()

    def stop_once_drained() -> None:
        deadline = time.monotonic() + 60
        while publisher.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()

    watcher = threading.Thread(target=stop_once_drained)
    watcher.start()
    send_while_waiting([publisher], stop, 120.0)  # returns early only once stop is set
    watcher.join()
    assert not publisher.busy and publisher.stats.delivered == 3_000
    # and a wait with nothing to send is a plain wait, however short
    send_while_waiting([publisher], threading.Event(), 0.0)
    assert publisher.stats.delivered == 3_000
    spool.close()


def test_broker_outage_of_30s_loses_nothing(tmp_path: Path) -> None:
    broker = Broker(log_path=tmp_path / "broker.log").start()
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix="outage.")
        create_topics(kafka.librdkafka(), kafka.topic_prefix)
        host = _Host(kafka, tmp_path / "agent")
        host.run_ticks(10)
        assert host.publisher.flush(20)
        before = _read_all(
            broker.bootstrap, kafka.topics.name("samples"), host.publisher.stats.delivered
        )

        broker.stop()  # Tansu keeps nothing: what was delivered before lives only in `before`
        outage_end = time.monotonic() + 30
        while time.monotonic() < outage_end:
            host.run_ticks(1, real_sleep_s=0.25)
        host.publish_rest()
        spooled = host.spool.pending
        assert spooled >= 10, f"expected batches to pile up in the spool, found {spooled}"

        broker = Broker(port=broker.port, log_path=tmp_path / "broker2.log").start()
        create_topics(kafka.librdkafka(), kafka.topic_prefix)
        assert host.publisher.flush(120), f"spool not drained: {host.spool.pending} left"
        after = _read_all(broker.bootstrap, kafka.topics.name("samples"), spooled)
        _check_exact(host, before + after)
        first_seen = [b["batch_seq"] for b in after]
        assert sorted(set(first_seen)) == sorted(dict.fromkeys(first_seen))  # drained in order
        host.spool.close()
    finally:
        broker.stop()
