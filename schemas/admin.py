"""Pre-create the catalogue's topics on any Kafka-protocol broker (AdminClient)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from schemas import kafka as clients
from schemas.errors import InfrastructureError
from schemas.topics import CATALOGUE, TopicSpec

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicResult:
    name: str
    outcome: Literal["created", "exists"]
    partitions: int
    declared_partitions: int

    @property
    def mismatch(self) -> bool:
        return self.partitions != self.declared_partitions


def create_topics(
    client_config: Mapping[str, str],
    prefix: str,
    catalogue: tuple[TopicSpec, ...] = CATALOGUE,
    timeout_s: float = 15.0,
) -> list[TopicResult]:
    """Create every topic that does not exist yet; existing topics are left as they are.

    Returns one result per topic with the partition count the broker reports, so a
    caller can warn about topics created earlier with other partition counts.
    """
    admin = clients.admin(client_config)  # InfrastructureError without confluent-kafka
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    wanted = {entry.name(prefix): entry for entry in catalogue}
    futures = admin.create_topics(
        [
            NewTopic(name, entry.partitions, 1, config=entry.configs())
            for name, entry in wanted.items()
        ],
        request_timeout=timeout_s,
    )
    outcomes: dict[str, Literal["created", "exists"]] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            outcomes[name] = "created"
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != _TOPIC_ALREADY_EXISTS:
                raise InfrastructureError(f"could not create topic {name}: {error.str()}") from exc
            outcomes[name] = "exists"
        except Exception as exc:
            raise InfrastructureError(f"could not create topic {name}: {exc}") from exc
    metadata = admin.list_topics(timeout=timeout_s)
    results = []
    for name, entry in wanted.items():
        reported = metadata.topics.get(name)
        partitions = len(reported.partitions) if reported is not None else 0
        result = TopicResult(name, outcomes[name], partitions, entry.partitions)
        if result.mismatch:
            logger.warning(
                "topic %s has %s partitions, the catalogue declares %s",
                name,
                partitions,
                entry.partitions,
            )
        results.append(result)
    return results
