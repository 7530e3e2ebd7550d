"""The signals service's I/O shell: intensity consumed from the whole retained topic (no
group: every instance folds it all), signals produced, the HTTP API served."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from schemas import kafka as clients
from schemas.codec import Codec, make_codec
from schemas.records import CarbonSignal
from schemas.topics import spec
from streams.jsonhttp import JsonServer
from streams.settings import SignalsSettings
from streams.signals.service import Signals

logger = logging.getLogger("streams.signals.service")  # its lines read as the service's


def run_signals(
    settings: SignalsSettings,
    stop: threading.Event,
    clock_ms: Callable[[], int],
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Consume intensity, publish signals, serve the API until ``stop``; ``on_ready`` gets
    the API's URL once it listens."""
    kafka = settings.kafka
    codec: Codec = make_codec(kafka.framing, kafka.registry_ids)
    producer = clients.producer(kafka, {"linger.ms": "20"})
    topic = kafka.topics.name("signals")

    outbox: queue.SimpleQueue[CarbonSignal] = queue.SimpleQueue()

    def drain() -> None:
        """Publish what the API and the tier decided (off the request path)."""
        while True:
            try:
                signal = outbox.get_nowait()
            except queue.Empty:
                break
            key = (signal["zone"] or signal["kind"]).encode()
            producer.produce(topic, codec.encode("carbon_signal", signal), key=key)
        producer.poll(0)

    signals = Signals(settings, clock_ms=clock_ms, publish=outbox.put)
    # no consumer group: every instance folds the whole retained intensity topic itself
    consumer = clients.consumer(kafka, settings.group_id)
    clients.assign_whole(consumer, {kafka.topics.name("intensity"): spec("intensity").partitions})
    server = JsonServer(signals.handle, host=settings.api_host, port=settings.api_port)
    server.start()
    logger.info("signals API on %s", server.url)
    if on_ready is not None:
        on_ready(server.url)
    next_stale = 0.0
    try:
        while not stop.is_set():
            for message in consumer.consume(num_messages=500, timeout=0.05):
                if message.error() is None:
                    try:
                        event: Any = codec.decode("grid_intensity", message.value() or b"")
                        signals.on_intensity(event)
                    except Exception as exc:  # a bad event must not stop the signals
                        logger.warning("intensity event skipped: %s", exc)
            if time.monotonic() >= next_stale:
                signals.check_stale()
                next_stale = time.monotonic() + 5
            drain()
    finally:
        server.close()
        consumer.close()
        drain()
        producer.flush(10)
