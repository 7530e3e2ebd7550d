"""The topic catalogue covers every contract once."""

from __future__ import annotations

from schemas.codec import CONVERSIONS, SCHEMA_NAMES
from schemas.topics import CATALOGUE, Topics


def test_every_schema_has_exactly_one_topic() -> None:
    written = [name for t in CATALOGUE for name in (t.schema, *t.also_written_as)]
    assert sorted(written) == sorted(SCHEMA_NAMES)


def test_a_topic_s_other_records_are_read_as_its_schema() -> None:
    for topic in CATALOGUE:
        for other in topic.also_written_as:
            assert (other, topic.schema) in CONVERSIONS


def test_names_are_unique_and_prefixed() -> None:
    names = Topics("acme.").all()
    assert len(set(names.values())) == len(CATALOGUE)
    assert names["samples"] == "acme.gpu.samples"
    assert all(name.startswith("acme.") for name in names.values())


def test_ledger_is_one_partition_and_kept_forever() -> None:
    (ledger,) = [t for t in CATALOGUE if t.key == "ledger"]
    assert ledger.partitions == 1
    assert ledger.configs() == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
    }
