"""Read every record of a topic from the beginning (all partitions), decoded."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from schemas.codec import Codec, SchemaName


def read_topic(
    bootstrap: str,
    topic: str,
    schema: SchemaName,
    expected: int,
    *,
    partitions: int,
    timeout_s: float = 30,
    settle_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Poll until ``expected`` records arrived (then ``settle_s`` more, to catch extras)."""
    codec = Codec()
    consumer = _from_the_start(bootstrap, topic, partitions)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if len(records) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                records.append(codec.decode(schema, message.value()))
    finally:
        consumer.close()
    assert len(records) >= expected, f"read {len(records)} of {expected} in {timeout_s}s"
    return records


def read_until(
    bootstrap: str,
    topic: str,
    schema: SchemaName,
    done: Callable[[list[dict[str, Any]]], bool],
    *,
    partitions: int,
    timeout_s: float = 120,
    quiet_s: float = 3.0,
) -> list[dict[str, Any]]:
    """Poll until ``done(records)`` holds and no record arrived for ``quiet_s`` (so a
    revision still on its way is read too); fails after ``timeout_s``."""
    codec = Codec()
    consumer = _from_the_start(bootstrap, topic, partitions)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if time.monotonic() - last >= quiet_s and done(records):
                return records
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                records.append(codec.decode(schema, message.value()))
                last = time.monotonic()
    finally:
        consumer.close()
    raise AssertionError(f"read {len(records)} record(s) of {topic}; not done in {timeout_s}s")


def _from_the_start(bootstrap: str, topic: str, partitions: int) -> Consumer:
    """A consumer assigned every partition of ``topic`` from offset 0 (no group joined)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": "false"}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return consumer
