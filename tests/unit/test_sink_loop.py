"""The sink's loop without Kafka or ClickHouse: what it batches, when it commits, and what
it does with a message it cannot store. A scripted consumer and an in-memory store stand
behind the sink's own seams (the consumer factory and ``RowStore``); the same rules
against a real broker and chDB are in tests/integration/test_sink.py."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from schemas.codec import Codec
from schemas.topics import Topics
from streams.settings import SinkSettings
from streams.sink.blocks import SampleBlocks
from streams.sink.sink import Sink
from tests.examples import EXAMPLES

TOPICS = Topics("llcr.")


class Message:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        self._where = (topic, partition, offset)
        self._value = value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


class ScriptedConsumer:
    """Hands out ``script`` one poll at a time, then sets ``stop`` after a few empty polls."""

    def __init__(self, script: list[list[Message]], stop: threading.Event) -> None:
        self.script = list(script)
        self.stop = stop
        self.commits: list[dict[tuple[str, int], int]] = []
        self.empty = 0
        self.closed = False

    def subscribe(self, topics: list[str], **_: Any) -> None:
        assert TOPICS.name("samples") in topics

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if self.script:
            return self.script.pop(0)
        self.empty += 1
        if self.empty >= 3:
            self.stop.set()
        return []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False  # the commit is synchronous: done before the next batch
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def assignment(self) -> list[Any]:
        return []

    def poll(self, timeout: float) -> None:
        return None

    def close(self) -> None:
        self.closed = True


class MemoryStore:
    """Rows by table; ``down`` is how many more calls (inserts and health checks) fail."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Sequence[Any]]] = {}
        self.down = 0
        self.events: list[str] = []

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        if self.down:
            self.down -= 1
            self.events.append("failed")
            raise ConnectionError("store down")
        self.rows.setdefault(table, []).extend(rows)
        self.events.append(f"insert {table} {len(rows)}")

    def insert_arrow(self, table: str, data: Any) -> None:
        self.insert(table, list(zip(*data.to_pydict().values(), strict=True)), data.column_names)

    def query(self, sql: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
        if self.down:
            self.down -= 1
            raise ConnectionError("store down")
        return [], [], [(1,)]


def run_sink(
    script: list[list[Message]], store: MemoryStore, **settings: Any
) -> tuple[Sink, ScriptedConsumer]:
    stop = threading.Event()
    consumer = ScriptedConsumer(script, stop)
    ticks = iter(range(10**6))
    sink = Sink(
        SinkSettings(batch_max_wait_s=2.0, max_backoff_s=0.5, **settings),
        store=store,
        clock=lambda: float(next(ticks)),  # a second a call: batches fall due by count
        consumer=lambda: consumer,
    )
    original_commit = consumer.commit

    def commit(offsets: list[Any], asynchronous: bool) -> None:
        store.events.append("commit")
        original_commit(offsets, asynchronous)

    consumer.commit = commit  # type: ignore[method-assign]
    sink.run(stop)
    return sink, consumer


def samples(partition: int, first: int, count: int) -> list[Message]:
    value = Codec().encode("gpu_sample_batch", EXAMPLES["gpu_sample_batch"])
    topic = TOPICS.name("samples")
    return [Message(topic, partition, first + i, value) for i in range(count)]


def test_offsets_are_committed_after_the_rows_are_in_the_store_one_past_the_last() -> None:
    store = MemoryStore()
    sink, consumer = run_sink([samples(0, 10, 3), samples(1, 0, 2)], store)
    per_batch = len(EXAMPLES["gpu_sample_batch"]["samples"])
    assert len(store.rows["gpu_samples"]) == 5 * per_batch
    assert consumer.commits[-1] == {(TOPICS.name("samples"), 0): 13, (TOPICS.name("samples"), 1): 2}
    # every commit follows the inserts of its batch
    first_commit = store.events.index("commit")
    assert all(e.startswith("insert") for e in store.events[:first_commit])
    assert sink.stats.messages == 5 and consumer.closed


def test_a_store_outage_delays_the_commit_and_loses_no_row() -> None:
    store = MemoryStore()
    store.down = 4  # two attempts fail (an insert and a health check each), then it is back
    sink, consumer = run_sink([samples(0, 0, 4)], store)
    per_batch = len(EXAMPLES["gpu_sample_batch"]["samples"])
    assert len(store.rows["gpu_samples"]) == 4 * per_batch  # every row, once
    assert store.events == ["failed", "failed", f"insert gpu_samples {4 * per_batch}", "commit"]
    assert consumer.commits == [{(TOPICS.name("samples"), 0): 4}]
    assert sink.stats.insert_failures == 2


def test_a_defect_in_the_columnar_path_falls_back_to_rows_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the Arrow table cannot be made (a defect of ours), the same samples go in by
    the readable row mapping: stored once, the offsets committed, no retry loop."""

    def broken(self: Any) -> Any:
        raise OverflowError("a defect")

    monkeypatch.setattr(SampleBlocks, "finish", broken)
    store = MemoryStore()
    bad = copy.deepcopy(EXAMPLES["gpu_sample_batch"])
    bad["samples"][0]["power_w"] = float("nan")
    topic = TOPICS.name("samples")
    refused = Message(topic, 0, 3, Codec().encode("gpu_sample_batch", bad))
    sink, consumer = run_sink([[*samples(0, 0, 3), refused]], store)
    per_batch = len(EXAMPLES["gpu_sample_batch"]["samples"])
    assert len(store.rows["gpu_samples"]) == 3 * per_batch
    assert [r[-2:] for r in store.rows["gpu_samples"]] == [(0, 0), (0, 1), (0, 2)]
    assert [r[-2] for r in store.rows["gpu_samples_rejected"]] == ["out_of_range"]
    assert consumer.commits == [{(topic, 0): 4}]
    assert sink.stats.insert_failures == 0


def test_an_undecodable_message_is_a_dead_letter_and_its_offset_is_committed() -> None:
    store = MemoryStore()
    topic = TOPICS.name("samples")
    bad = [Message(topic, 2, 7, b"\x00not avro"), Message(topic, 2, 8, None)]
    sink, consumer = run_sink([samples(2, 5, 2) + bad], store)
    letters = store.rows["dead_letters"]
    assert [(row[0], row[1], row[5]) for row in letters] == [
        (f"{topic}:2:7", "sink", "undecodable"),
        (f"{topic}:2:8", "sink", "undecodable"),
    ]
    assert consumer.commits[-1] == {(topic, 2): 9}  # past the letters: they are stored
    assert sink.stats.dead_letters == 2
