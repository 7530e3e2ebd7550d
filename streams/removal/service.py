"""`llcr actions`: turn final emission hours into removal, and ledger every step.

One instance writes the ledger (one partition, one total order). At start it rebuilds its
state by folding the whole ledger topic (and reads the removal orders and capture commands
it issued), so a restart resumes exactly: nothing is ledgered twice (every entry names its
source) and every order goes on from its last persisted state with its idempotency key.

The loop, every ``tick_s``:

1. Consume final/revised hours and capture telemetry. Hours become obligations; telemetry
   becomes net capture (captured − electric × the commanded hour's intensity). Bad input
   (absurd or negative obligations, telemetry of unknown units or commands) is
   dead-lettered with a reason and settles nothing.
2. Plan capture for each recent site-hour with a unit (:mod:`streams.removal.capture`).
3. Allocate pooled removal to the earliest unmatched hours.
4. Order credits for the residual per scope: at least ``min_lot_g``, when the residual
   reaches it or when the oldest uncovered hour's latency deadline (capped at the end of
   its quarter) is ``order_lead_h`` away; advance open orders
   (requested → confirmed → delivered → retired, or failed with a reason).
5. Publish ledger entries, commands, order states and dead letters; flush; commit offsets.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas import kafka as clients
from schemas.codec import Codec, SchemaName, make_codec
from schemas.errors import LlcrError
from schemas.kafka import Message
from schemas.letters import consumed_letter, input_letter
from schemas.records import (
    CaptureCommand,
    CaptureTelemetry,
    DeadLetter,
    EmissionHour,
    LedgerEntry,
    RemovalOrder,
)
from schemas.topics import TopicKey, spec
from streams.removal.capture_desk import CaptureDesk
from streams.removal.checkpoint import read_head, write_head
from streams.removal.core import Book, Policy, RejectedError
from streams.removal.ledger import Head, head_of, verify
from streams.removal.orders import OrderDesk
from streams.removal.provider import CreditProvider
from streams.removal.stats import ActionStats
from streams.settings import ActionsSettings
from streams.topic_reader import read_to_end

logger = logging.getLogger(__name__)

COMPONENT = "actions"


class LedgerBrokenError(LlcrError):
    """The ledger topic does not verify; the service refuses to append to it."""


@dataclass
class _Out:
    ledger: list[LedgerEntry] = field(default_factory=list)
    commands: list[CaptureCommand] = field(default_factory=list)
    orders: list[RemovalOrder] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


class Actions:
    """The removal service; see the module docstring."""

    def __init__(
        self,
        settings: ActionsSettings,
        *,
        provider: CreditProvider,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = Policy(
            scope_mode=settings.scope_mode,
            buffer=settings.buffer,
            include_embodied=settings.include_embodied,
            latency_target_h=settings.latency_target_h,
            max_record_g=settings.max_record_g,
            unpriced_g_per_kwh=settings.unpriced_g_per_kwh,
            unpriced_zone_g_per_kwh=dict(settings.unpriced_zone_g_per_kwh),
        )
        self.book = Book(self.policy)
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.stats = ActionStats()
        self.codec: Codec = make_codec(settings.kafka.framing, settings.kafka.registry_ids)
        self.capture = CaptureDesk(settings, self.book, self.stats, self.clock_ms)
        self.desk = OrderDesk(settings, self.book, provider, self.stats, self.clock_ms)
        self._producer: Any = None

    # -- start --------------------------------------------------------------------------

    def recover(self) -> None:
        """Fold the ledger, and read the orders and commands issued before (see module doc)."""
        config = self.settings.kafka.librdkafka()
        entries = [self._decode("ledger", m) for m in self._read("ledger", config)]
        # entries published just before a stop may lie beyond the checkpoint; a topic
        # that does not reach it lost its tail, and appending would fork the ledger
        head = read_head(self.settings.ledger_head)
        count, broken = verify(entries, head, beyond_head=True)
        if broken is not None:
            raise LedgerBrokenError(
                f"ledger entry seq {broken.seq} ({broken.entry_id or 'none'}): {broken.reason}",
                hint=f"the head checkpoint is {self.settings.ledger_head}",
            )
        for entry in entries:
            self.book.apply(entry)
            payload_command = _payload_field(entry, "command_id")
            if entry["kind"] == "capture_delivery" and payload_command:
                self.capture.recovered_delivery(payload_command)
        for message in self._read("removal_orders", config):
            self.desk.recovered(self._decode("removal_orders", message))
        for message in self._read("capture_commands", config):
            self.capture.recovered_command(self._decode("capture_commands", message))
        write_head(self.settings.ledger_head, head_of(self.book.chain))
        logger.info(
            "recovered %d ledger entries, %d orders, %d commands",
            count,
            len(self.desk.orders),
            len(self.capture.commands),
        )

    def _read(self, key: TopicKey, config: dict[str, str]) -> Iterator[Any]:
        return read_to_end(config, self.settings.kafka.topics.name(key), spec(key).partitions)

    def _decode(self, key: TopicKey, message: Message) -> Any:
        return self.codec.decode(spec(key).schema, message.value())

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.recover()
        kafka = self.settings.kafka
        self._producer = clients.idempotent_producer(kafka, {"linger.ms": "5"})
        consumer = clients.consumer(
            kafka,
            self.settings.group_id,
            {
                "auto.offset.reset": "earliest",
                "session.timeout.ms": "6000",
                "heartbeat.interval.ms": "1000",
            },
        )
        consumer.subscribe(
            [kafka.topics.name("emissions_hourly"), kafka.topics.name("capture_telemetry")]
        )
        try:
            while not stop.is_set():
                messages = consumer.consume(num_messages=500, timeout=self.settings.tick_s)
                out = _Out()
                for message in messages:
                    if message.error() is None:
                        self._handle(message, out)
                self.step(out)
                self._publish(out)
                if messages:
                    consumer.commit(asynchronous=False)
        finally:
            consumer.close()
            if self._producer is not None:
                self._producer.flush(30)

    def _handle(self, message: Message, out: _Out) -> None:
        topic = message.topic()
        key: TopicKey = (
            "emissions_hourly"
            if topic == self.settings.kafka.topics.name("emissions_hourly")
            else "capture_telemetry"
        )
        try:
            record = self._decode(key, message)
        except Exception as exc:  # an undecodable message: dead letter, go on
            out.dead.append(self._dead_letter(message, "undecodable", str(exc)))
            return
        try:
            if key == "emissions_hourly":
                self.on_emission(record, out)
            else:
                self.on_telemetry(record, out)
        except RejectedError as exc:
            out.dead.append(self._dead_letter(message, exc.code, str(exc)))

    def on_emission(self, record: EmissionHour, out: _Out) -> None:
        self.stats.records += 1
        out.ledger += self.book.record_emission(record, self.clock_ms())
        self.capture.saw_record(record["site"], record["hour_start_ms"])

    def on_telemetry(self, t: CaptureTelemetry, out: _Out) -> None:
        out.ledger += self.capture.on_telemetry(t)

    def step(self, out: _Out) -> None:
        """Plan capture, allocate, order and advance orders (no consumption)."""
        now = self.clock_ms()
        out.commands += self.capture.plan(now)
        out.ledger += self.book.allocate(now)
        out.orders += self.desk.order(now, self.capture.pending_mg)
        advanced = self.desk.advance()
        out.orders += advanced.orders
        out.ledger += advanced.ledger
        for order, code, reason in advanced.failed:
            out.dead.append(self._order_dead_letter(order, code, reason))
        out.ledger += self.book.allocate(self.clock_ms())

    # -- output -------------------------------------------------------------------------

    def _dead_letter(self, message: Message, code: str, reason: str) -> DeadLetter:
        self.stats.dead_letters += 1
        logger.warning(
            "rejected %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), reason
        )
        return consumed_letter(COMPONENT, code, reason, message, self.clock_ms())

    def _order_dead_letter(self, order: RemovalOrder, code: str, reason: str) -> DeadLetter:
        self.stats.dead_letters += 1
        return input_letter(
            COMPONENT,
            code,
            reason,
            value=self.codec.encode("removal_order", order),
            key=order["order_id"].encode(),
            failed_at_ms=self.clock_ms(),
            own_id=f"order:{order['order_id']}",
        )

    def _publish(self, out: _Out) -> None:
        batches: list[tuple[TopicKey, SchemaName, str, list[Any]]] = [
            ("ledger", "ledger_entry", "scope", out.ledger),
            ("capture_commands", "capture_command", "unit_id", out.commands),
            ("removal_orders", "removal_order", "order_id", out.orders),
            ("dead_letters", "dead_letter", "component", out.dead),
        ]
        for key, schema, field_name, records in batches:
            topic = self.settings.kafka.topics.name(key)
            for record in records:
                self._producer.produce(
                    topic, self.codec.encode(schema, record), key=str(record[field_name]).encode()
                )
        self.stats.ledger_entries += len(out.ledger)
        if any(records for *_, records in batches):
            left = self._producer.flush(30)
            if left:
                raise LlcrError(f"{left} message(s) not delivered in 30 s; stopping to stay exact")
        if out.ledger:  # on the broker now: checkpoint the head
            last = out.ledger[-1]
            write_head(self.settings.ledger_head, Head(last["chain_id"], last["seq"], last["hash"]))


def _payload_field(entry: LedgerEntry, name: str) -> Any:
    return json.loads(entry["payload_json"]).get(name)
