"""Running the sink as a process: open the store (waiting while it is unavailable), serve
queries and metrics, consume until a signal."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_not_exception_type,
    stop_when_event_set,
    wait_exponential,
)

from streams.process import stop_on_signals
from streams.settings import SinkSettings
from streams.sink.query import QueryServer
from streams.sink.sink import Sink, SinkStats
from streams.sink.store import Store
from streams.store.client import is_embedded
from streams.store.migrations import MigrationError

logger = logging.getLogger(__name__)


class SinkCollector(Collector):
    """The sink's counters, read at scrape time."""

    def __init__(self, stats: SinkStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield CounterMetricFamily("llcr_sink_messages", "Messages consumed.", value=s.messages)
        rows = CounterMetricFamily("llcr_sink_rows", "Rows inserted.", labels=["table"])
        for table, count in sorted(s.rows.items()):
            rows.add_metric([table], count)
        yield rows
        yield CounterMetricFamily("llcr_sink_batches", "Batches committed.", value=s.batches)
        yield CounterMetricFamily(
            "llcr_sink_insert_failures", "Failed insert attempts.", value=s.insert_failures
        )
        yield CounterMetricFamily(
            "llcr_sink_dead_letters", "Messages or rows dead-lettered.", value=s.dead_letters
        )


def tune_gc() -> None:
    """The sink allocates many short-lived tuples per batch; the default gen-0 threshold
    (700) runs the cyclic collector thousands of times a second over them (bench/sink.py:
    about a quarter of the decode-and-map time). Rows hold no cycles."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def open_store(store: Store, stop: threading.Event, max_backoff_s: float) -> bool:
    """Connect and migrate, backing off while the store is unavailable; False if stopped.

    A migration error is not an outage: it is raised at once.
    """
    retrying = Retrying(
        retry=retry_if_not_exception_type(MigrationError),
        wait=wait_exponential(multiplier=0.5, min=0.5, max=max_backoff_s),
        stop=stop_when_event_set(stop),
        sleep=lambda seconds: _wait(stop, seconds),
        before_sleep=before_sleep_log(logger, logging.WARNING),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                store.open()
    except MigrationError:
        raise
    except Exception:
        if stop.is_set():
            return False
        raise
    return True


def _wait(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


def run_sink(
    settings: SinkSettings,
    *,
    from_earliest: bool = False,
    stop: threading.Event | None = None,
    stats: SinkStats | None = None,
) -> SinkStats:
    """Run until ``stop`` is set (or SIGINT/SIGTERM when not given); count into ``stats``."""
    if stop is None:
        stop = threading.Event()
        stop_on_signals(stop)
    tune_gc()
    store = Store(settings.clickhouse)
    sink = Sink(settings, store=store, from_earliest=from_earliest, stats=stats)
    try:
        with ExitStack() as stack:
            if not open_store(store, stop, settings.max_backoff_s):
                return sink.stats
            if is_embedded(settings.clickhouse.dsn) and settings.query_endpoint:
                server = stack.enter_context(QueryServer(store, settings.clickhouse))
                logger.info("query endpoint %s", server.url)
            if settings.metrics_port is not None:
                registry = CollectorRegistry()
                registry.register(SinkCollector(sink.stats))
                start_http_server(settings.metrics_port, registry=registry)
            sink.run(stop)
    finally:
        store.close()
        logger.info("sink stopped: %s", sink.stats.snapshot())
    return sink.stats
