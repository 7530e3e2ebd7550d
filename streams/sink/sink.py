"""`llcr sink`: every topic into its ClickHouse table, at least once, seen once.

The loop: consume a batch of messages from every topic, decode and map them to rows
(:mod:`streams.sink.rows`), insert each table's rows, then commit the consumed offsets.
Offsets are committed only after every insert of the batch succeeded, so a crash or an
outage re-delivers; the tables' deterministic keys (ReplacingMergeTree) make the re-insert
invisible to readers of FINAL and of the views.

* ClickHouse unavailable: the batch is kept, the assigned partitions are paused (the
  consumer stays in its group), the insert is retried with exponential backoff
  (tenacity's wait, capped), and consumption resumes where it stopped.
* A message that cannot be decoded, or a row ClickHouse rejects while it accepts others,
  becomes a ``dead_letters`` row (component ``sink``, the topic, partition and offset,
  the reason and the original bytes); the rest of the batch goes on.
* A rebalance flushes what is buffered; if that fails the buffer is dropped, uncommitted,
  and the partitions' next owner reads it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_attempt,
    stop_any,
    stop_when_event_set,
    wait_exponential,
)

from schemas import kafka as clients
from schemas.blocks import from_block
from schemas.bounds import BoundsError
from schemas.codec import Codec, make_codec
from schemas.kafka import Message, position
from schemas.letters import consumed_letter
from schemas.topics import TopicKey, spec
from streams.settings import SinkSettings
from streams.sink.blocks import SampleBlocks
from streams.sink.rows import TABLES, Rejected, Row, batch_sample_rows, sample_map
from streams.sink.store import RowStore, Store

logger = logging.getLogger(__name__)

COMPONENT = "sink"


@dataclass
class SinkStats:
    """Counters for logs, the metrics endpoint and tests."""

    messages: int = 0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    insert_failures: int = 0
    dead_letters: int = 0
    rejected_rows: int = 0  # samples outside the bounds, stored in gpu_samples_rejected
    inserts: int = 0  # inserts made while isolating bad rows
    commits: int = 0
    last_error: str = ""

    def snapshot(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "rows": dict(self.rows),
            "batches": self.batches,
            "insert_failures": self.insert_failures,
            "dead_letters": self.dead_letters,
            "rejected_rows": self.rejected_rows,
            "commits": self.commits,
            "last_error": self.last_error,
        }


@dataclass
class _Batch:
    rows: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    blocks: dict[str, SampleBlocks] = field(default_factory=dict)  # tables inserted as Arrow
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to read
    size: int = 0
    started: float = 0.0

    def clear(self) -> None:
        self.rows.clear()
        self.blocks.clear()
        self.offsets.clear()
        self.size = 0


def dead_letter_row(message: Message, *, code: str, reason: str, failed_at_ms: int) -> Row:
    """A ``dead_letters`` row for a consumed message the sink could not store."""
    letter = consumed_letter(COMPONENT, code, reason, message, failed_at_ms)
    key = letter.get("key")
    return (
        letter["dead_letter_id"],
        letter["component"],
        letter.get("source_topic"),
        letter.get("source_partition"),
        letter.get("source_offset"),
        letter["reason_code"],
        letter["reason"],
        None if key is None else key.decode("utf-8", "backslashreplace"),
        letter["value"].decode("utf-8", "backslashreplace"),
        letter["failed_at_ms"],
    )


def _halves(rows: list[Row]) -> list[list[Row]]:
    """The two halves of ``rows``, the first last (it is popped first)."""
    middle = len(rows) // 2
    return [rows[middle:], rows[:middle]]


class Sink:
    """Consume every topic and write it to ClickHouse; see the module docstring."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
        store: RowStore | None = None,
        from_earliest: bool = False,
        clock: Callable[[], float] = time.time,
        stats: SinkStats | None = None,
        consumer: Callable[[], Any] | None = None,
    ) -> None:
        """``store`` and ``consumer`` (a factory) replace ClickHouse and Kafka, for tests of
        the loop's batching and commit rules."""
        self.settings = settings
        self.store: RowStore = store or Store(settings.clickhouse)
        self._consumer_factory = consumer
        self.stats = stats if stats is not None else SinkStats()
        self._codec: Codec = make_codec(settings.kafka.framing, settings.kafka.registry_ids)
        self._topics: dict[str, TopicKey] = {
            name: key for key, name in settings.kafka.topics.all().items()
        }
        self._from_earliest = from_earliest
        self._rewound: set[tuple[str, int]] = set()
        self._clock = clock
        self._batch = _Batch()
        self._consumer: Any = None
        self._maps = {**TABLES, "samples": sample_map(settings.bounds.to_bounds())}
        self._columns = {m.table: m.columns for m in self._maps.values()}
        self._maps_by_table = {m.table: m for m in self._maps.values()}
        for m in self._maps.values():
            if m.rejected_table:
                self._columns[m.rejected_table] = m.rejected_columns

    # -- consumer -----------------------------------------------------------------------

    def _make_consumer(self) -> Any:
        if self._consumer_factory is not None:
            made = self._consumer_factory()
            made.subscribe(list(self._topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
            return made
        consumer = clients.consumer(
            self.settings.kafka,
            self.settings.group_id,
            {
                "auto.offset.reset": "earliest",
                "session.timeout.ms": str(int(self.settings.session_timeout_s * 1000)),
                "heartbeat.interval.ms": str(int(self.settings.heartbeat_interval_s * 1000)),
                "max.poll.interval.ms": "600000",
            },
        )
        consumer.subscribe(list(self._topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        if self._from_earliest:
            for p in partitions:
                if (p.topic, p.partition) not in self._rewound:
                    p.offset = OFFSET_BEGINNING
                    self._rewound.add((p.topic, p.partition))
            consumer.assign(partitions)
        logger.info("sink assigned %d partition(s)", len(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self._batch.size:
            try:
                self._write(retry=False)
            except Exception as exc:  # the next owner re-reads uncommitted data
                logger.warning("flush at revoke failed (%s); the batch will be re-read", exc)
            self._batch.clear()

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume, write and commit until ``stop`` is set; then flush what is buffered."""
        self._consumer = self._make_consumer()
        try:
            while not stop.is_set():
                messages = self._consumer.consume(
                    num_messages=self.settings.poll_max_messages, timeout=0.2
                )
                for message in messages:
                    self._add(message)
                if self._due():
                    self._write(retry=True, stop=stop)
            if self._batch.size:
                self._write(retry=True, stop=stop, attempts=3)
        finally:
            self._consumer.close()
            self._consumer = None

    def _due(self) -> bool:
        if not self._batch.size:
            return False
        full = self._batch.size >= self.settings.batch_max_rows
        return full or self._clock() - self._batch.started >= self.settings.batch_max_wait_s

    def _add(self, message: Message) -> None:
        if message.error() is not None:
            logger.warning("consumer error: %s", message.error())
            return
        topic, partition, offset = position(message)
        batch = self._batch
        if not batch.size:
            batch.started = self._clock()
        batch.offsets[(topic, partition)] = offset + 1
        self.stats.messages += 1
        key = self._topics.get(topic)
        if key is None:  # not ours (a subscription can only name ours; be safe)
            return
        mapping = self._maps[key]
        source = (partition, offset) if mapping.adds_source else ()
        added = 0
        try:
            record = self._codec.decode(mapping.reads or spec(key).schema, message.value())
            if mapping.check is not None:
                mapping.check(record)
            if mapping.blocks is not None:
                blocks = batch.blocks.get(mapping.table)
                if blocks is None:
                    blocks = batch.blocks[mapping.table] = mapping.blocks()
                before = blocks.size
                blocks.add(record, source)  # its rows outside the bounds come at the write
                added = blocks.size - before
                rows: list[Row] = []
            else:
                rows = list(mapping.rows(record))
        except BoundsError as exc:  # decodes, but outside what can be true
            self._dead(message, exc.code, str(exc)[:2000])
            return
        except Exception as exc:  # any bad message becomes a dead letter
            self._dead(message, "undecodable", str(exc)[:2000])
            return
        self._queue(mapping.table, rows, source)
        batch.size += max(1, len(rows) + added)

    def _queue(self, table: str, rows: Iterable[Row], source: tuple[int, ...]) -> None:
        """Buffer ``rows`` of ``table`` (a :class:`Rejected` one for its rejected table),
        each with the ``source`` columns."""
        target = self._maps_by_table[table].rejected_table or table
        for row in rows:
            if isinstance(row, Rejected):
                self.stats.rejected_rows += 1
                self._batch.rows[target].append((*row.row, *source, row.code, row.reason))
            else:
                self._batch.rows[table].append((*row, *source))

    def _dead(self, message: Message, code: str, reason: str) -> None:
        # failed_at is the message's own timestamp, so a replay writes the identical row
        kind, timestamp_ms = message.timestamp()
        when = timestamp_ms if kind and timestamp_ms > 0 else int(self._clock() * 1000)
        row = dead_letter_row(message, code=code, reason=reason, failed_at_ms=when)
        logger.warning("dead letter %s: %s: %s", row[0], code, reason)
        self.stats.dead_letters += 1
        self._batch.rows[TABLES["dead_letters"].table].append(row)
        self._batch.size += 1

    def _write(
        self,
        *,
        retry: bool,
        stop: threading.Event | None = None,
        attempts: int | None = None,
    ) -> None:
        """Insert every buffered table, then commit; retry with backoff while told to."""
        stops: list[Any] = [stop_after_attempt(1 if not retry else attempts or 10**9)]
        if stop is not None:
            stops.append(stop_when_event_set(stop))
        retrying = Retrying(
            wait=wait_exponential(multiplier=0.5, min=0.5, max=self.settings.max_backoff_s),
            stop=stop_any(*stops),
            sleep=lambda seconds: self._pause_for(seconds, stop),
            before_sleep=self._failed,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._insert_all()
        self._commit()
        self.stats.batches += 1
        self._batch.clear()

    def _failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.stats.insert_failures += 1
        self.stats.last_error = str(exc)[:500]
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "ClickHouse write failed (attempt %d, retry in %.1fs): %s",
            state.attempt_number,
            wait,
            str(exc)[:300],
        )

    def _pause_for(self, delay: float, stop: threading.Event | None) -> None:
        """Wait ``delay`` s with the partitions paused, still serving the group."""
        consumer = self._consumer
        assignment = consumer.assignment() if consumer is not None else []
        if assignment:
            consumer.pause(assignment)
        deadline = time.monotonic() + delay
        try:
            while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                if consumer is not None:
                    # keeps the membership; only partitions assigned meanwhile yield messages
                    message = consumer.poll(0.1)
                    if message is not None:
                        self._add(message)
                else:
                    time.sleep(0.1)
        finally:
            if assignment:
                consumer.resume(assignment)

    def _insert_all(self) -> None:
        for table in list(self._batch.blocks):
            blocks = self._batch.blocks[table]
            try:
                data, rejected = blocks.finish()
            except Exception:  # a defect of ours must not stop the sink: the readable path
                logger.exception("sample blocks not turned into a table; mapped row by row")
                self._map_by_rows(table, blocks)
                del self._batch.blocks[table]
                continue
            if data.num_rows:
                try:
                    self.store.insert_arrow(table, data)
                except Exception:
                    rows = blocks.rows()
                    if not self._isolable(table, rows):
                        raise
                    self._isolate(table, rows, self._columns[table])
                else:
                    self.stats.rows[table] += data.num_rows
            self._add_rejected(table, rejected)
            del self._batch.blocks[table]  # done: a later failure does not repeat it
        for table in list(self._batch.rows):
            rows = self._batch.rows[table]
            if rows:
                self._insert_or_isolate(table, rows, self._columns[table])
            del self._batch.rows[table]  # done: a later failure does not repeat it

    def _map_by_rows(self, table: str, blocks: SampleBlocks) -> None:
        """Queue ``blocks``' samples as rows of the readable v1 mapping, for the row loop."""
        for block, source in blocks.parts():
            self._queue(table, batch_sample_rows(from_block(block), blocks.bounds), source)

    def _add_rejected(self, table: str, rejected: list[Rejected]) -> None:
        """Queue the rows ``table``'s accumulator refused for its rejected table (inserted
        after it, in the same write)."""
        self._queue(table, rejected, ())  # their source columns are in their rows

    def _insert_or_isolate(self, table: str, rows: list[Row], columns: Sequence[str]) -> None:
        try:
            self.store.insert(table, rows, columns)
        except Exception:
            if not self._isolable(table, rows):
                raise
            self._isolate(table, rows, columns)
            return
        self.stats.rows[table] += len(rows)

    def _isolable(self, table: str, rows: list[Row]) -> bool:
        """After a failed insert: whether to bisect it (the store is up, so some row is
        bad) rather than retry it whole (an outage, or one dead letter that failed)."""
        return self._store_healthy() and not (len(rows) == 1 and table == "dead_letters")

    def _store_healthy(self) -> bool:
        try:
            self.store.query("SELECT 1")
        except Exception:  # unhealthy is the answer
            return False
        return True

    def _isolate(self, table: str, rows: list[Row], columns: Sequence[str]) -> None:
        """The store is up but refused the batch: bisect it, insert the halves that go in,
        dead-letter the single rows that do not. One bad row costs O(log n) inserts, where
        row by row cost n (one unencodable row had cut ingestion to a few rows a second).
        A row is dead-lettered only while the store answers: an outage in the middle
        raises, and the whole batch is retried (re-inserted rows are replaced, not added).
        """
        dead: list[Row] = []
        parts = _halves(rows)  # the whole batch failed already
        while parts:
            part = parts.pop()
            self.stats.inserts += 1
            try:
                self.store.insert(table, part, columns)
            except Exception as exc:  # a part that fails is split again, down to one row
                if len(part) > 1:
                    parts += _halves(part)
                    continue
                if not self._store_healthy():
                    raise
                dead.append(self._rejected_row(table, part[0], exc))
                continue
            self.stats.rows[table] += len(part)
        if dead:
            self.store.insert("dead_letters", dead, TABLES["dead_letters"].columns)

    def _rejected_row(self, table: str, row: Row, error: Exception) -> Row:
        self.stats.dead_letters += 1
        ident = str(row[0])[:256]  # the dead letter itself must go in: bounded fields
        return (
            f"{COMPONENT}:{table}:{ident}",
            COMPONENT,
            table,
            None,
            None,
            "insert_rejected",
            str(error)[:1000],
            ident,
            repr(row)[:100_000],
            int(self._clock() * 1000),
        )

    def _commit(self) -> None:
        if not self._batch.offsets or self._consumer is None:
            return
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in self._batch.offsets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:  # e.g. partitions moved away: their owner re-reads
            logger.warning("offset commit failed (%s); rows will be re-read, not duplicated", exc)
