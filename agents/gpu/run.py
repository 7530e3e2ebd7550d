"""Wire a GPU agent from settings and run its loop until stopped (the I/O shell)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.gpu.agent import AgentState, GpuAgent, HostIdentity
from agents.gpu.jobs import ProcJobResolver
from agents.gpu.model import JobLabels
from agents.gpu.replay import ReplaySource
from agents.gpu.sources import GpuSource, NvmlSource, SimSource
from agents.publisher import Publisher, send_while_waiting
from agents.settings import GpuAgentSettings
from agents.spool import Spool, SpoolFullError
from schemas import kafka as clients
from schemas.blocks import to_block
from schemas.codec import Codec, make_codec
from schemas.errors import ConfigError, InfrastructureError
from schemas.records import GpuSampleBatch, SampleSource

logger = logging.getLogger(__name__)


@dataclass
class SourceSetup:
    source: GpuSource
    kind: SampleSource
    clock: Callable[[], float] = time.time  # epoch seconds the loop samples with
    labels_of: Callable[[int], JobLabels] | None = None  # None: read /proc


def make_source(settings: GpuAgentSettings, gpus: int, seed: int) -> SourceSetup:
    if settings.source == "nvml":
        try:
            return SourceSetup(NvmlSource(), "nvml")
        except Exception as exc:  # no driver / no GPU: pynvml raises NVMLError or ImportError
            raise InfrastructureError(
                f"no NVIDIA GPU readable through NVML on this host ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})",
                hint="install the NVIDIA driver (libnvidia-ml.so), or run a demo with "
                "--source sim (simulated energy is refused downstream unless allowed)",
            ) from None
    if settings.source == "replay":
        if settings.replay_file is None:
            raise ConfigError("source = replay needs replay_file (--trace FILE)")
        replay = ReplaySource.from_file(
            settings.replay_file, settings.replay_speed, settings.replay_utc_offset_min
        )
        return SourceSetup(replay, "replay", replay.clock, replay.labels_of)
    sim = SimSource(gpus=gpus, seed=seed, host=settings.host)
    return SourceSetup(sim, "sim", labels_of=sim.labels_of)


def build_agent(settings: GpuAgentSettings, setup: SourceSetup) -> GpuAgent:
    identity = HostIdentity(
        settings.agent_id or settings.host, settings.host, settings.site, settings.zone, setup.kind
    )
    fixed = (
        JobLabels(settings.job, settings.tenant or "unattributed", settings.model)
        if settings.job
        else None
    )
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    return GpuAgent(
        identity,
        setup.source,
        setup.labels_of or ProcJobResolver(default_tenant=settings.tenant or "unattributed"),
        fixed_job=fixed,
        state=AgentState.load(settings.spool_dir / "agent_state.json"),
        tokens_job=settings.tokens_job,
    )


def producer_factory(settings: GpuAgentSettings) -> Callable[[], Any]:
    def create() -> Any:
        return clients.idempotent_producer(
            settings.kafka,
            {
                # keyed by host, so one worker owns a host; murmur2 is Java's and
                # aiokafka's partitioner, so other clients place a host the same way
                "partitioner": "murmur2_random",
                "linger.ms": "50",
                "compression.type": "lz4",
                "message.timeout.ms": "10000",  # surface outages; the spool keeps the records
                "queue.buffering.max.messages": str(settings.queue_max_batches),
            },
        )

    return create


def run(
    settings: GpuAgentSettings,
    agent: GpuAgent,
    stop: threading.Event,
    *,
    duration_s: float | None = None,
    clock: Callable[[], float] = time.time,
    nvml_errors: Callable[[], int] = lambda: 0,
) -> Publisher:
    """Sample, batch, spool and publish until ``stop`` is set, ``duration_s`` passes or a
    replayed trace ends. ``clock`` gives the sample timestamps (the trace's for replay)."""
    codec = make_codec(settings.kafka.framing, settings.kafka.registry_ids)
    encode = sample_encoder(codec, settings.sample_format)
    spool = Spool(settings.spool_dir / "batches", settings.spool_max_bytes)
    publisher = Publisher(producer_factory(settings), settings.kafka.topics.name("samples"), spool)
    state_path = settings.spool_dir / "agent_state.json"
    scraper = None
    if settings.inference_metrics_url:
        from agents.tokens import TokenScraper

        scraper = TokenScraper(
            settings.inference_metrics_url,
            settings.prompt_tokens_metric,
            settings.generation_tokens_metric,
        )
    if settings.metrics_port is not None:
        from agents.metrics import AgentView, serve

        view = AgentView(settings.host, agent.counters, publisher.stats, spool, nvml_errors)
        if scraper is not None:
            view.token_scrape_errors = lambda: scraper.errors
        serve(view, settings.metrics_port, settings.metrics_addr)
    started = time.monotonic()
    next_sample = next_publish = time.monotonic()
    while not stop.is_set() and not agent.exhausted():
        now = time.monotonic()
        if duration_s is not None and now - started >= duration_s:
            break
        if now >= next_sample:
            agent.sample(int(clock() * 1000))
            next_sample += settings.sample_interval_s
        if now >= next_publish:
            if scraper is not None:
                agent.add_tokens(scraper.take())
            publish_pending(agent, encode, publisher, state_path, int(time.time() * 1000))
            next_publish += settings.publish_interval_s
        # a spool backlog (after an outage) drains while it waits, not 1,000 per tick
        send_while_waiting([publisher], stop, min(next_sample, next_publish) - time.monotonic())
    publish_pending(agent, encode, publisher, state_path, int(time.time() * 1000))
    agent.state.save(state_path)  # a clean stop: the exact counters, no gap at next start
    if not publisher.flush(10.0):
        logger.warning(
            "stopping with %d batch(es) spooled; they are sent at next start", spool.pending
        )
    publisher.stats.spooled_at_stop = spool.pending
    spool.close()
    if scraper is not None:
        scraper.close()
    return publisher


def sample_encoder(codec: Codec, sample_format: str) -> Callable[[GpuSampleBatch], bytes]:
    """The agent's message bytes for a batch: a columnar block, or the v1 batch."""
    if sample_format == "batch":
        return lambda batch: codec.encode("gpu_sample_batch", batch)
    return lambda batch: codec.encode("gpu_sample_block", to_block(batch))


def publish_pending(
    agent: GpuAgent,
    encode: Callable[[GpuSampleBatch], bytes],
    publisher: Publisher,
    state_path: Path,
    now_ms: int,
) -> None:
    """Batch what the agent sampled since the last call, persist sequences, spool the batch."""
    batch = agent.take_batch(now_ms)
    if batch is None:
        return
    agent.state.reserve(state_path)  # before spooling: a crash leaves a gap, never a repeat
    try:
        publisher.submit(batch["host"].encode(), encode(batch))
    except SpoolFullError as exc:
        logger.error("batch %s dropped: %s", batch["batch_id"], exc)
