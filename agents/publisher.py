"""Publish spooled records with the confluent-kafka idempotent producer.

The producer is created lazily (the agent starts without a broker), keeps at most
``max_in_flight`` records outstanding, and advances the spool cursor only over the
contiguous prefix of acknowledged records. A failed delivery rewinds to the cursor once
nothing is in flight; records sent twice that way are harmless downstream (per-GPU
sequence numbers).

A producer that failed is never trusted again: every rewind sends from a **new** producer
(a new producer id, fresh idempotence sequences). An idempotent producer that timed out
records during a broker stall keeps sequence state the broker no longer agrees with, and
after a stall of a minute on Tansu every later send of the old producer failed with
``PRODUCER_FENCED``, for good, while the spool grew (issue 23). A non-retriable or fatal
error replaces the producer at once, without waiting for the rest of its callbacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from agents.spool import Spool

logger = logging.getLogger(__name__)

# errors after which this producer id will never be accepted again
_FENCED = {
    getattr(KafkaError, name)
    for name in (
        "PRODUCER_FENCED",
        "INVALID_PRODUCER_EPOCH",
        "UNKNOWN_PRODUCER_ID",
        "OUT_OF_ORDER_SEQUENCE_NUMBER",
        "_FENCED",
    )
    if hasattr(KafkaError, name)
}


@dataclass
class PublisherStats:
    delivered: int = 0
    delivery_errors: int = 0
    bytes_delivered: int = 0
    spooled_at_stop: int = 0  # records left in the spool at stop (sent at next start)
    producers_replaced: int = 0


class Publisher:
    def __init__(
        self,
        producer_factory: Callable[[], Any],
        topic: str,
        spool: Spool,
        max_in_flight: int = 1000,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self._factory = producer_factory
        self._topic = topic
        self._spool = spool
        self._max_in_flight = max_in_flight
        self._backoff_s = retry_backoff_s
        self._producer: Any = None
        self._generation = 0  # callbacks of a replaced producer are ignored
        self._next = spool.cursor
        self._acked: set[int] = set()
        self._in_flight = 0
        self._failed_at: float | None = None
        self._discarded: list[Any] = []
        self.stats = PublisherStats()

    @property
    def busy(self) -> bool:
        """Whether records are spooled and not yet acknowledged."""
        return self._spool.pending > 0

    def submit(self, key: bytes, value: bytes) -> None:
        self._spool.append(key, value)

    def submit_many(self, records: list[tuple[bytes, bytes]]) -> None:
        """Spool several records with one fsync (all or none)."""
        if records:
            self._spool.extend(records)

    def pump(self, timeout_s: float = 0.0) -> None:
        """Send what is spooled, serve delivery callbacks, advance the cursor."""
        self._release_discarded()
        if self._producer is None:
            self._producer = self._factory()
        self._rewind_if_failed()
        try:
            while self._next < self._spool.end and self._in_flight < self._max_in_flight:
                if not self._produce(self._next):
                    break
                self._next += 1
            self._producer.poll(timeout_s)
        except KafkaException as exc:
            self.stats.delivery_errors += 1
            self._replace_producer(exc)
        self._advance()

    def _replace_producer(self, exc: Exception) -> None:
        """A fatal or non-retriable producer error (a broker that lost or fenced our
        producer id): drop the producer, forget what it had in flight, resend from the
        cursor with a new one."""
        logger.warning(
            "producer failed for good (%s); starting a new one, resending from the spool", exc
        )
        self._drop_producer()
        self._failed_at = time.monotonic()

    def _drop_producer(self) -> None:
        """Forget the producer; it is purged and released by the next pump, outside any
        of its own callbacks (librdkafka must not be re-entered from one)."""
        if self._producer is not None:
            self._discarded.append(self._producer)
            self.stats.producers_replaced += 1
        self._producer = None
        self._generation += 1  # its callbacks, if any come, are ignored
        self._in_flight = 0

    def _release_discarded(self) -> None:
        while self._discarded:
            old = self._discarded.pop()
            try:
                old.purge()
                old.flush(0)
            except Exception as exc:  # it is being thrown away: nothing more to do
                logger.debug("purging a discarded producer: %s", exc)

    def flush(self, timeout_s: float) -> bool:
        """Pump until everything spooled is acknowledged or the time is up."""
        deadline = time.monotonic() + timeout_s
        while self._spool.pending and time.monotonic() < deadline:
            self.pump(0.1)
        return self._spool.pending == 0

    def _produce(self, index: int) -> bool:
        key, value = self._spool.read(index)
        generation = self._generation
        try:
            self._producer.produce(
                self._topic,
                value=value,
                key=key,
                on_delivery=lambda err, msg: self._delivered(err, index, len(value), generation),
            )
        except BufferError:  # librdkafka's local queue is full: try again next pump
            return False
        self._in_flight += 1
        return True

    def _delivered(self, err: Any, index: int, size: int, generation: int) -> None:
        if generation != self._generation:
            return
        self._in_flight -= 1
        if err is None:
            self._acked.add(index)
            self.stats.delivered += 1
            self.stats.bytes_delivered += size
            return
        self.stats.delivery_errors += 1
        if self._failed_at is None:
            logger.warning("delivery failed (%s); records stay spooled and will be resent", err)
            self._failed_at = time.monotonic()
        if err.fatal() or not err.retriable() or err.code() in _FENCED:
            self._replace_producer(KafkaException(err))

    def _rewind_if_failed(self) -> None:
        if self._failed_at is None or self._in_flight > 0:
            return
        if time.monotonic() - self._failed_at < self._backoff_s:
            return
        self._failed_at = None
        self._next = self._spool.cursor
        self._acked = {i for i in self._acked if i >= self._next}
        if self._producer is not None:
            self._drop_producer()  # a producer that failed is not trusted again
        self._producer = self._factory()

    def _advance(self) -> None:
        cursor = self._spool.cursor
        while cursor in self._acked:
            self._acked.discard(cursor)
            cursor += 1
        self._spool.commit(cursor)


def send_while_waiting(
    publishers: Sequence[Publisher], stop: threading.Event, seconds: float
) -> None:
    """Wait ``seconds`` (or until ``stop``), sending meanwhile; a busy publisher is pumped
    at least once, however little time is left.

    A busy publisher is pumped with a blocking poll, which returns at its next delivery
    report, so a backlog drains at the broker's pace. Pumping once and then sleeping sent
    at most ``max_in_flight`` records per wait: a feeder's year of backlog (43,800
    periods) took 44 s to reach the broker, and hours closed unpriced behind it.
    """
    deadline = time.monotonic() + seconds
    while True:
        busy = [p for p in publishers if p.busy]
        for publisher in busy:  # at least once, however little time is left
            publisher.pump(max(0.0, min(0.05, deadline - time.monotonic())))
        left = deadline - time.monotonic()
        if stop.is_set() or left <= 0:
            return
        if not busy:
            stop.wait(left)  # nothing to send: records come from the caller, after this
            return
