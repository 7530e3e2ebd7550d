"""schemas/kafka.py: the one place Kafka clients are built."""

from __future__ import annotations

import sys

import pytest
from confluent_kafka import KafkaError, KafkaException

from schemas import kafka as clients
from schemas.errors import InfrastructureError
from schemas.settings import KafkaSettings


def test_the_connection_is_the_settings_librdkafka_properties() -> None:
    settings = KafkaSettings(
        bootstrap_servers="b:9093", client_properties={"client.id": "llcr-test"}
    )
    assert clients.connection(settings) == settings.librdkafka()
    raw = {"bootstrap.servers": "x:1"}
    copied = clients.connection(raw)
    assert copied == raw and copied is not raw


def test_properties_reach_librdkafka_after_the_connection() -> None:
    # librdkafka validates every property when the client is built: a wrong value given
    # as a property is refused, so properties are passed (and last, over the defaults)
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(KafkaException, match=r"enable\.auto\.commit"):
        clients.consumer(settings, "g", {"enable.auto.commit": "sometimes"})
    with pytest.raises(KafkaException, match=r"enable\.idempotence"):
        clients.idempotent_producer(settings, {"enable.idempotence": "sometimes"})


def test_without_confluent_kafka_a_client_is_an_infrastructure_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("confluent_kafka", "confluent_kafka.admin"):
        monkeypatch.setitem(sys.modules, name, None)
    settings = KafkaSettings()
    for build in (
        lambda: clients.producer(settings),
        lambda: clients.consumer(settings, "g"),
        lambda: clients.admin(settings),
    ):
        with pytest.raises(InfrastructureError, match=r"llcr\[agent\]"):
            build()


def test_partition_eof_is_librdkafkas_code_and_unreachable_says_what_to_do() -> None:
    assert clients.PARTITION_EOF == KafkaError._PARTITION_EOF
    error = clients.unreachable("h:9", 5.0, KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert str(error).startswith("cannot reach a Kafka broker at h:9 in 5 s (")
    assert error.hint is not None and "LLCR_KAFKA__BOOTSTRAP_SERVERS" in error.hint
