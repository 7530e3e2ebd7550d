"""Wire a GPU agent from settings and run its loop until stopped (the I/O shell)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.gpu.agent import AgentState, GpuAgent, HostIdentity
from agents.gpu.jobs import ProcJobResolver
from agents.gpu.model import JobLabels
from agents.gpu.sources import GpuSource, NvmlSource, SimSource
from agents.publisher import Publisher
from agents.settings import GpuAgentSettings
from agents.spool import Spool, SpoolFullError
from schemas.codec import make_codec
from schemas.errors import ConfigError
from schemas.records import SampleSource

logger = logging.getLogger(__name__)


def make_source(settings: GpuAgentSettings, gpus: int, seed: int) -> tuple[GpuSource, SampleSource]:
    if settings.source in ("nvml", "auto"):
        try:
            return NvmlSource(), "nvml"
        except Exception as exc:  # no driver / no GPU: pynvml raises NVMLError or ImportError
            if settings.source == "nvml":
                raise
            logger.warning("no NVML GPU here (%s); using the sim source", exc)
    if settings.source == "replay":
        raise ConfigError("source = replay is not available in this version; use nvml or sim")
    return SimSource(gpus=gpus, seed=seed, host=settings.host), "sim"


def build_agent(settings: GpuAgentSettings, source: GpuSource, kind: SampleSource) -> GpuAgent:
    identity = HostIdentity(
        settings.agent_id or settings.host, settings.host, settings.site, settings.zone, kind
    )
    fixed = (
        JobLabels(settings.job, settings.tenant or "unattributed", settings.model)
        if settings.job
        else None
    )
    state = AgentState.load(settings.spool_dir / "agent_state.json")
    return GpuAgent(
        identity,
        source,
        ProcJobResolver(default_tenant=settings.tenant or "unattributed"),
        fixed_job=fixed,
        state=state,
    )


def producer_factory(settings: GpuAgentSettings) -> Callable[[], Any]:
    def create() -> Any:
        from confluent_kafka import Producer

        return Producer(
            {
                **settings.kafka.librdkafka(),
                "enable.idempotence": "true",
                "linger.ms": "50",
                "compression.type": "lz4",
                "message.timeout.ms": "10000",  # surface outages; the spool keeps the records
                "queue.buffering.max.messages": str(settings.queue_max_batches),
            }
        )

    return create


def run(
    settings: GpuAgentSettings,
    agent: GpuAgent,
    stop: threading.Event,
    duration_s: float | None = None,
    clock: Callable[[], float] = time.time,
) -> Publisher:
    """Sample, batch, spool and publish until ``stop`` is set (or ``duration_s`` passes)."""
    codec = make_codec(settings.kafka.framing, settings.kafka.registry_ids)
    spool = Spool(settings.spool_dir / "batches", settings.spool_max_bytes)
    publisher = Publisher(producer_factory(settings), settings.kafka.topics.name("samples"), spool)
    state_path = settings.spool_dir / "agent_state.json"
    started = time.monotonic()
    next_sample = next_publish = time.monotonic()
    while not stop.is_set() and (duration_s is None or time.monotonic() - started < duration_s):
        now = time.monotonic()
        if now >= next_sample:
            agent.sample(int(clock() * 1000))
            next_sample += settings.sample_interval_s
        if now >= next_publish:
            publish_pending(agent, codec, publisher, state_path, int(clock() * 1000))
            next_publish += settings.publish_interval_s
        publisher.pump(0)
        stop.wait(max(0.0, min(next_sample, next_publish) - time.monotonic()))
    publish_pending(agent, codec, publisher, state_path, int(clock() * 1000))
    if not publisher.flush(10.0):
        logger.warning(
            "stopping with %d batch(es) spooled; they are sent at next start", spool.pending
        )
    return publisher


def publish_pending(
    agent: GpuAgent, codec: Any, publisher: Publisher, state_path: Path, now_ms: int
) -> None:
    """Batch what the agent sampled since the last call, persist sequences, spool the batch."""
    batch = agent.take_batch(now_ms)
    if batch is None:
        return
    agent.state.save(state_path)  # before spooling: a crash can leave a gap, never a repeat
    try:
        publisher.submit(batch["host"].encode(), codec.encode("gpu_sample_batch", batch))
    except SpoolFullError as exc:
        logger.error("batch %s dropped: %s", batch["batch_id"], exc)
