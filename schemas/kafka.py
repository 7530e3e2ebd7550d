"""The one seam to Kafka: every confluent-kafka client llcr runs is built here.

Agents and streams both need producers and consumers; each names only what is its own
(its group, its latency, its idempotence) and this module adds the connection and
security properties of :class:`~schemas.settings.KafkaSettings` (or of a librdkafka
connection mapping already made from them). confluent-kafka is an optional dependency
(``llcr[agent]``, ``llcr[streams]``): it is imported when a client is built, and its
absence is an :class:`InfrastructureError` with the extra to install.

:class:`Message` is the part of a consumed message llcr reads, so service loops can be
typed (and driven by a test's own messages) without naming confluent-kafka's class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from schemas.errors import InfrastructureError

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    from schemas.settings import KafkaSettings

#: librdkafka's "reached the end of a partition" code (``KafkaError._PARTITION_EOF``).
PARTITION_EOF = -191

_MISSING = "needs confluent-kafka: pip install 'llcr[agent]' or 'llcr[streams]'"


class Message(Protocol):
    """What llcr reads of a consumed message (confluent-kafka's ``Message`` has it)."""

    def error(self) -> Any: ...

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def timestamp(self) -> tuple[int, int]: ...


def position(message: Message) -> tuple[str, int, int]:
    """``(topic, partition, offset)`` of a consumed message (only an error event lacks
    them, and no caller asks an error event where it is)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"a message without a position: {message.error()}")
    return topic, partition, offset


def connection(kafka: KafkaSettings | Mapping[str, str]) -> dict[str, str]:
    """The librdkafka connection properties (bootstrap, security, client properties)."""
    if isinstance(kafka, Mapping):
        return dict(kafka)
    return kafka.librdkafka()


def producer(
    kafka: KafkaSettings | Mapping[str, str], properties: Mapping[str, str] | None = None
) -> Producer:
    """A plain producer: the connection plus ``properties`` (e.g. ``linger.ms``)."""
    try:
        from confluent_kafka import Producer
    except ImportError as exc:
        raise InfrastructureError(f"a Kafka producer {_MISSING}") from exc
    return Producer({**connection(kafka), **(properties or {})})


def idempotent_producer(
    kafka: KafkaSettings | Mapping[str, str], properties: Mapping[str, str] | None = None
) -> Producer:
    """A producer that writes each message once and in order per partition, even across
    its own retries (``enable.idempotence``, which implies ``acks=all``)."""
    return producer(kafka, {"enable.idempotence": "true", "acks": "all", **(properties or {})})


def consumer(
    kafka: KafkaSettings | Mapping[str, str],
    group: str,
    properties: Mapping[str, str] | None = None,
) -> Consumer:
    """A consumer in ``group`` that commits only when told (``enable.auto.commit`` off):
    every llcr loop commits after its own work is durable, never on a timer."""
    try:
        from confluent_kafka import Consumer
    except ImportError as exc:
        raise InfrastructureError(f"a Kafka consumer {_MISSING}") from exc
    return Consumer(
        {
            **connection(kafka),
            "group.id": group,
            "enable.auto.commit": "false",
            **(properties or {}),
        }
    )


def assign_whole(consumer: Consumer, topics: Mapping[str, int]) -> None:
    """Assign every partition of each topic (name -> partition count) from its first
    retained offset, without joining a group: a reader that folds whole topics."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer.assign(
        [
            TopicPartition(topic, partition, OFFSET_BEGINNING)
            for topic, count in topics.items()
            for partition in range(count)
        ]
    )


def admin(kafka: KafkaSettings | Mapping[str, str]) -> AdminClient:
    """An admin client (topic creation, listing)."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError as exc:
        raise InfrastructureError(f"`llcr topics` {_MISSING}") from exc
    config: dict[str, str | int | float | bool] = {**connection(kafka)}
    return AdminClient(config)


def reason_of(exc: BaseException) -> str:
    """librdkafka's own words for a ``KafkaException`` (its ``KafkaError.str()``)."""
    if exc.args and hasattr(exc.args[0], "str"):
        return str(exc.args[0].str())
    return str(exc)


def unreachable(bootstrap: str | None, timeout_s: float, exc: BaseException) -> InfrastructureError:
    """The error for a broker that did not answer: one line, with what to do."""
    return InfrastructureError(
        f"cannot reach a Kafka broker at {bootstrap} in {timeout_s:.0f} s ({reason_of(exc)})",
        hint="start the broker (or `llcr up`), or set LLCR_KAFKA__BOOTSTRAP_SERVERS",
    )
