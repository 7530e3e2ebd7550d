"""The GPU agent's Prometheus endpoint (prometheus-client).

Names follow the habits of DCGM-exporter (per-GPU series labelled ``gpu``, ``UUID``,
``modelName``, ``Hostname``) and Kepler (energy as ``*_joules_total`` counters, per
container/job). Values are read from the agent at scrape time: nothing is updated on the
hot path. ``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` come from
prometheus-client's process collector, so the agent's own cost is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.gpu.agent import AgentCounters
from agents.grid.feeder import FeederStats
from agents.publisher import PublisherStats
from agents.spool import Spool


@dataclass
class AgentView:
    """What the collector reads at scrape time."""

    host: str
    counters: AgentCounters
    publisher: PublisherStats
    spool: Spool
    nvml_errors: Callable[[], int]
    token_scrape_errors: Callable[[], int] = lambda: 0


class AgentCollector(Collector):
    def __init__(self, view: AgentView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        v = self._view
        c = v.counters
        labels = ["gpu", "UUID", "modelName", "Hostname"]
        energy = CounterMetricFamily(
            "llcr_gpu_energy_joules", "GPU energy published by this agent.", labels=labels
        )
        power = GaugeMetricFamily(
            "llcr_gpu_power_watts", "Mean power of the latest published interval.", labels=labels
        )
        # dict() copies are atomic under the GIL: the agent thread may be counting now.
        labels_of, power_of = dict(c.gpu_labels), dict(c.gpu_power_w)
        for uuid, mj in sorted(dict(c.gpu_energy_mj).items()):
            if uuid not in labels_of or uuid not in power_of:
                continue
            index, model = labels_of[uuid]
            values = [str(index), uuid, model, v.host]
            energy.add_metric(values, mj / 1000)
            power.add_metric(values, power_of[uuid])
        jobs = CounterMetricFamily(
            "llcr_job_gpu_joules",
            "GPU energy attributed to each job (Kepler-style).",
            labels=["job_id", "tenant", "Hostname"],
        )
        for (job, tenant), mj in sorted(dict(c.job_energy_mj).items()):
            jobs.add_metric([job, tenant, v.host], mj / 1000)
        rejected = CounterMetricFamily(
            "llcr_agent_rejected_readings",
            "Readings rejected as absurd, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(dict(c.rejected).items()):
            rejected.add_metric([reason], count)
        yield from (energy, power, jobs, rejected)
        yield CounterMetricFamily("llcr_agent_samples", "Samples batched.", value=c.samples)
        yield CounterMetricFamily("llcr_agent_batches", "Batches spooled.", value=c.batches)
        yield CounterMetricFamily(
            "llcr_agent_delivered_batches", "Batches acknowledged.", value=v.publisher.delivered
        )
        yield CounterMetricFamily(
            "llcr_agent_published_bytes",
            "Bytes acknowledged by the broker.",
            value=v.publisher.bytes_delivered,
        )
        yield CounterMetricFamily(
            "llcr_agent_delivery_errors",
            "Failed deliveries (retried from the spool).",
            value=v.publisher.delivery_errors,
        )
        yield GaugeMetricFamily(
            "llcr_agent_spool_batches", "Batches waiting in the spool.", value=v.spool.pending
        )
        yield GaugeMetricFamily(
            "llcr_agent_spool_bytes", "Bytes held by the spool.", value=v.spool.size_bytes
        )
        yield CounterMetricFamily(
            "llcr_agent_nvml_errors", "NVML read errors.", value=v.nvml_errors()
        )
        yield CounterMetricFamily(
            "llcr_agent_token_scrape_errors",
            "Failed scrapes of the inference server's token counters.",
            value=v.token_scrape_errors(),
        )


class GridCollector(Collector):
    """The grid feeder's counters: events, rejections by reason, gaps, provider errors."""

    def __init__(self, stats: FeederStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield CounterMetricFamily("llcr_grid_events", "Intensity events published.", value=s.events)
        yield CounterMetricFamily("llcr_grid_gaps", "Gaps found.", value=s.gaps)
        yield CounterMetricFamily(
            "llcr_grid_filled", "Periods filled with flagged estimates.", value=s.filled
        )
        rejected = CounterMetricFamily(
            "llcr_grid_rejected", "Inputs rejected, by reason.", labels=["reason"]
        )
        for reason, count in sorted(dict(s.problems).items()):
            rejected.add_metric([reason], count)
        errors = CounterMetricFamily(
            "llcr_grid_provider_errors", "Failed provider calls.", labels=["provider"]
        )
        for provider, count in sorted(dict(s.provider_errors).items()):
            errors.add_metric([provider], count)
        yield from (rejected, errors)


def serve(view: AgentView | FeederStats, port: int, addr: str = "0.0.0.0") -> CollectorRegistry:
    """Start the endpoint on a daemon thread; return its registry."""
    registry = CollectorRegistry()
    collector = AgentCollector(view) if isinstance(view, AgentView) else GridCollector(view)
    registry.register(collector)
    ProcessCollector(registry=registry)
    start_http_server(port, addr=addr, registry=registry)
    return registry
