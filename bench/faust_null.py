"""A faust "null" agent: iterate and ack ``gpu.samples`` with the worker's own app settings
and ``take_events`` batch, nothing else. faust's own ceiling for bench/matching.py.

Run by bench/matching.py as a subprocess (settings from the same ``LLCR_*`` variables as
the worker); it writes "first_ms last_ms messages" to ``$NULL_AGENT_OUT`` once it has
seen ``$NULL_AGENT_MESSAGES`` messages, and keeps running until terminated.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from streams.app import create_app
from streams.settings import WorkerSettings


def main() -> None:
    import faust

    settings = WorkerSettings.load()
    expected = int(os.environ["NULL_AGENT_MESSAGES"])
    out = Path(os.environ["NULL_AGENT_OUT"])
    app = create_app(settings)
    topic = app.topic(
        settings.kafka.topics.name("samples"),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    seen = {"count": 0, "first": 0}

    @app.agent(topic, name="null-samples")
    async def null(stream: object) -> None:
        async for events in stream.take_events(  # type: ignore[attr-defined]
            settings.batch_max_messages, within=settings.batch_within_s
        ):
            now = int(time.time() * 1000)
            seen["first"] = seen["first"] or now
            seen["count"] += len(events)
            if seen["count"] >= expected and not out.exists():
                out.write_text(f"{seen['first']} {now} {seen['count']}\n", encoding="utf-8")

    faust.Worker(app, loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    main()
