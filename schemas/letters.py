"""The one dead-letter builder: every rejected input becomes a record the same way.

The id rule is the one ``dead_letter.avsc`` documents, so that a message rejected again
after a restart gives the same id and the store keeps it once:

* Kafka input: ``<source_topic>:<partition>:<offset>``, plus ``part`` when one message
  holds several inputs that are rejected one by one (``:<gpu>:<seq>`` for a sample).
* Anything else: ``<component>:`` and the input's own id when it has one (``order:<id>``),
  else the first 32 hex digits of a SHA-256 of reason code, reason and bytes.

Reason, key and value are cut to sizes that always fit one produce request
(:func:`schemas.bounds.bounded_letter_fields`).
"""

from __future__ import annotations

import hashlib

from schemas.bounds import bounded_letter_fields
from schemas.kafka import Message, position
from schemas.records import DeadLetter


def message_letter(
    component: str,
    code: str,
    reason: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    failed_at_ms: int,
    part: str = "",
) -> DeadLetter:
    """The dead letter of (a part of) a consumed Kafka message."""
    return _letter(
        f"{topic}:{partition}:{offset}{part}",
        component,
        (topic, partition, offset),
        code=code,
        reason=reason,
        key=key,
        value=value,  # a tombstone has no bytes: b""
        failed_at_ms=failed_at_ms,
    )


def consumed_letter(
    component: str, code: str, reason: str, message: Message, failed_at_ms: int
) -> DeadLetter:
    """The dead letter of a whole consumed message (its key and bytes as they came)."""
    topic, partition, offset = position(message)
    return message_letter(
        component,
        code,
        reason,
        topic=topic,
        partition=partition,
        offset=offset,
        key=message.key(),
        value=message.value(),
        failed_at_ms=failed_at_ms,
    )


def input_letter(
    component: str,
    code: str,
    reason: str,
    *,
    value: bytes,
    key: bytes | None,
    failed_at_ms: int,
    own_id: str | None = None,
) -> DeadLetter:
    """The dead letter of an input that did not come from Kafka (a file row, an API
    answer, a record this component made and must not send)."""
    if own_id is None:
        digest = hashlib.sha256(f"{code}\0{reason}\0".encode() + value)
        own_id = digest.hexdigest()[:32]
    return _letter(
        f"{component}:{own_id}",
        component,
        None,
        code=code,
        reason=reason,
        key=key,
        value=value,
        failed_at_ms=failed_at_ms,
    )


def _letter(
    letter_id: str,
    component: str,
    source: tuple[str, int, int] | None,
    *,
    code: str,
    reason: str,
    key: bytes | None,
    value: bytes | None,
    failed_at_ms: int,
) -> DeadLetter:
    reason, key, kept = bounded_letter_fields(reason, key, value)
    topic, partition, offset = source if source is not None else (None, None, None)
    return {
        "dead_letter_id": letter_id,
        "component": component,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "reason_code": code,
        "reason": reason,
        "key": key,
        "value": kept,
        "failed_at_ms": failed_at_ms,
    }
