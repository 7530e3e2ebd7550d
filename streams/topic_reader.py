"""Read a whole topic as it is now (to rebuild state from it at start)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from schemas import kafka as clients
from schemas.errors import LlcrError


def check_reachable(kafka_config: dict[str, str], timeout_s: float = 5.0) -> None:
    """InfrastructureError, one line with a hint, when no broker answers metadata in time
    (instead of librdkafka's connection log and a KafkaException later)."""
    from confluent_kafka import KafkaException

    probe = clients.consumer(kafka_config, "llcr-probe", {"log_level": "0"})
    try:
        probe.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise clients.unreachable(kafka_config.get("bootstrap.servers"), timeout_s, exc) from None
    finally:
        probe.close()


def read_to_end(kafka_config: dict[str, str], topic: str, partitions: int) -> Iterator[Any]:
    """Every message of ``topic`` now, partition by partition, in offset order.

    The end is the high watermark of fetch responses (``cached=True``): Tansu answers
    ListOffsets(latest) with the newest batch's base offset + 1 (docs/ARCHITECTURE.md).
    """
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = clients.consumer(kafka_config, "llcr-reader")
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


def end_offsets(
    kafka_config: dict[str, str], partitions: list[tuple[str, int]], timeout_s: float = 30.0
) -> dict[tuple[str, int], int]:
    """The end offset (the next offset to be written) of each ``(topic, partition)``.

    Taken from the high watermark of a fetch response, never from ListOffsets(latest) alone:
    Tansu answers that with the newest record batch's base offset + 1, which is short of
    the end by the rest of that batch. The fetch starts one before the listed offset, so it
    reads at most the newest batch.
    """
    from confluent_kafka import TopicPartition

    consumer = clients.consumer(kafka_config, "llcr-end-offsets", {"enable.partition.eof": "true"})
    try:
        ends: dict[tuple[str, int], int] = {}
        start: list[Any] = []
        for topic, partition in partitions:
            low, listed = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout_s
            )
            if listed <= low:
                ends[(topic, partition)] = listed  # empty
            else:
                start.append(TopicPartition(topic, partition, max(listed - 1, low)))
        pending = {(tp.topic, tp.partition) for tp in start}
        consumer.assign(start)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise LlcrError(f"no fetch answered for {sorted(pending)} in {timeout_s:.0f} s")
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() != clients.PARTITION_EOF:
                continue  # transient; the deadline bounds it
            where = (str(message.topic()), int(message.partition() or 0))
            if where not in pending:
                continue
            high = consumer.get_watermark_offsets(TopicPartition(*where), cached=True)[1]
            if error is None:
                high = max(high, int(message.offset() or 0) + 1)
            if high >= 0:
                ends[where] = high
                pending.discard(where)
        return ends
    finally:
        consumer.close()


def committed_offsets(
    kafka_config: dict[str, str], group: str, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The offsets ``group`` committed for each ``(topic, partition)`` (0 when none).

    Reads them without joining the group, so its members are not disturbed.
    """
    from confluent_kafka import TopicPartition

    consumer = clients.consumer(kafka_config, group)
    try:
        found = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=30)
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in found}
    finally:
        consumer.close()
