"""Start a matching worker: internal topics, the faust app, the agents (the I/O shell)."""

from __future__ import annotations

from typing import Any

from schemas.admin import create_topics
from schemas.topics import TopicSpec
from streams.app import create_app
from streams.matching.worker import HOSTS_TABLE, PRICES_TABLE, Matching, register
from streams.settings import WorkerSettings


def changelog_specs(settings: WorkerSettings) -> tuple[TopicSpec, ...]:
    """The tables' changelog topics (faust may not declare topics: we create them)."""
    hosts = f"{settings.app_id}-{HOSTS_TABLE}-changelog"
    prices = f"{settings.app_id}-{PRICES_TABLE}-changelog"
    return (
        TopicSpec(
            "samples",
            hosts,
            "gpu_sample_batch",
            8,
            -1,
            "host|hour",
            "matching host state, one slice per hour",
            "compact",
        ),
        TopicSpec(
            "intensity", prices, "grid_intensity", 4, -1, "bin key", "matching prices", "compact"
        ),
    )


def ensure_internal_topics(settings: WorkerSettings) -> None:
    conf = settings.kafka.librdkafka()
    create_topics(conf, settings.kafka.topic_prefix)
    create_topics(conf, "", changelog_specs(settings))


def build_worker_app(settings: WorkerSettings, **overrides: Any) -> tuple[Any, Matching]:
    app = create_app(settings, **overrides)
    return app, register(app, settings)


def run_worker(settings: WorkerSettings, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT (faust's worker handles the signals)."""
    import faust

    ensure_internal_topics(settings)
    app, _ = build_worker_app(settings)
    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()
