"""The Tansu launcher and `llcr topics create` against a real broker."""

from __future__ import annotations

import time

from click.testing import CliRunner
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from schemas.cli import root
from schemas.codec import Codec
from schemas.settings import KafkaSettings
from schemas.topics import CATALOGUE, Topics
from streams.embedded.broker import Broker
from streams.topic_reader import end_offsets
from tests.conftest import FAST_GROUP
from tests.examples import EXAMPLES


def test_topics_create_makes_every_topic_and_is_harmless_twice(broker: Broker, unique: str) -> None:
    prefix = f"t{unique}."
    args = ["topics", "create", "--bootstrap", broker.bootstrap, "--prefix", prefix]
    first = CliRunner().invoke(root, args)
    assert first.exit_code == 0, first.output
    assert first.output.count("created ") == len(CATALOGUE)
    second = CliRunner().invoke(root, args)
    assert second.exit_code == 0, second.output
    assert second.output.count("exists ") == len(CATALOGUE)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    metadata = admin.list_topics(timeout=10)
    for entry in CATALOGUE:
        assert len(metadata.topics[entry.name(prefix)].partitions) == entry.partitions
    ledger = ConfigResource("topic", Topics(prefix).name("ledger"))
    configs = admin.describe_configs([ledger])[ledger].result(timeout=10)
    assert configs["retention.ms"].value == "-1"


def test_codec_records_travel_through_the_broker(
    kafka: KafkaSettings, topics: Topics, unique: str
) -> None:
    codec = Codec()
    producer = Producer({**kafka.librdkafka(), "enable.idempotence": "true"})
    batch = EXAMPLES["gpu_sample_batch"]
    producer.produce(
        topics.name("samples"), key=batch["host"], value=codec.encode("gpu_sample_batch", batch)
    )
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            **kafka.librdkafka(),
            **FAST_GROUP,
            "group.id": f"g{unique}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topics.name("samples")])
    try:
        message = None
        deadline = time.monotonic() + 20
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            if polled is not None and polled.error() is None:
                message = polled
        assert message is not None, "no message consumed within 20 s"
        assert message.key() == b"host-a"
        assert codec.decode("gpu_sample_batch", message.value()) == batch
    finally:
        consumer.close()


def test_broker_stops_and_frees_its_port() -> None:
    with Broker() as first:
        port = first.port
        assert first.running
    assert not first.running
    with Broker(port=port) as second:  # the port is usable again at once
        assert second.running


def test_end_offsets_count_every_record_of_the_newest_batch(
    kafka: KafkaSettings, topics: Topics
) -> None:
    """faust's table recovery reads to these ends (streams.app._transport)."""
    topic = topics.name("samples")
    producer = Producer({**kafka.librdkafka(), "linger.ms": "200"})
    for _ in range(2):
        producer.produce(topic, value=b"first", partition=1)  # a batch of 2
    assert producer.flush(30) == 0
    for i in range(5):
        producer.produce(topic, value=b"x%d" % i, partition=1)  # then one of 5
    assert producer.flush(30) == 0
    ends = end_offsets(kafka.librdkafka(), [(topic, 0), (topic, 1)])
    assert ends == {(topic, 0): 0, (topic, 1): 7}
