"""Read a whole topic as it is now (to rebuild state from it at start)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from schemas.errors import LlcrError


def read_to_end(kafka_config: dict[str, str], topic: str, partitions: int) -> Iterator[Any]:
    """Every message of ``topic`` now, partition by partition, in offset order.

    The end is the high watermark of fetch responses (``cached=True``): Tansu answers
    ListOffsets(latest) with the newest batch's base offset + 1 (docs/ARCHITECTURE.md).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({**kafka_config, "group.id": "llcr-reader", "enable.auto.commit": "false"})
    try:
        for partition in range(partitions):
            tp = TopicPartition(topic, partition)
            if consumer.get_watermark_offsets(tp, 10.0)[1] <= 0:
                continue  # never written to
            consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
            next_offset, deadline = 0, time.monotonic() + 60
            while True:
                if time.monotonic() > deadline:
                    raise LlcrError(f"could not read {topic}[{partition}] to its end in 60 s")
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    next_offset = int(message.offset() or 0) + 1
                    yield message
                low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and max(next_offset, low) >= high:
                    break
    finally:
        consumer.close()
