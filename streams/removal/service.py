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

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas import kafka as clients
from schemas.codec import Codec, SchemaName, make_codec
from schemas.errors import LlcrError
from schemas.kafka import Message, position
from schemas.letters import input_letter, message_letter
from schemas.records import (
    CaptureCommand,
    CaptureTelemetry,
    DeadLetter,
    EmissionHour,
    LedgerEntry,
    RemovalOrder,
)
from schemas.topics import TopicKey, spec
from schemas.units import HOUR_MS, split_by_key
from streams.removal.capture import command_id, plan
from streams.removal.checkpoint import read_head, write_head
from streams.removal.core import (
    Book,
    Policy,
    RejectedError,
    SiteHour,
    quarter_end_ms,
    to_mg,
)
from streams.removal.ledger import Head, head_of, verify
from streams.removal.provider import (
    ContractError,
    CreditProvider,
    ProviderUnavailableError,
    RejectedOrderError,
    require_permanent,
)
from streams.settings import ActionsSettings
from streams.topic_reader import read_to_end

logger = logging.getLogger(__name__)

COMPONENT = "actions"
TERMINAL = ("retired", "failed")


class LedgerBrokenError(LlcrError):
    """The ledger topic does not verify; the service refuses to append to it."""


@dataclass
class ActionStats:
    records: int = 0
    telemetry: int = 0
    ledger_entries: int = 0
    commands: int = 0
    orders_created: int = 0
    orders_retired: int = 0
    orders_failed: int = 0
    provider_errors: int = 0
    dead_letters: int = 0


@dataclass
class PendingCapture:
    command: CaptureCommand
    shares_mg: dict[str, int]  # expected net capture by scope


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
        self.method = require_permanent(settings.method)
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
        self.provider = provider
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.stats = ActionStats()
        self.codec: Codec = make_codec(settings.kafka.framing, settings.kafka.registry_ids)
        self.orders: dict[str, RemovalOrder] = {}
        self.next_try: dict[str, float] = {}  # order id -> monotonic time of the next call
        self.commands: dict[str, PendingCapture] = {}
        self.captured: set[str] = set()  # command ids with telemetry in the ledger
        self.last_record_at: dict[tuple[str, int], float] = {}  # site-hour -> monotonic
        self.planned: set[tuple[str, int]] = set()
        self.rates: dict[str, float] = {}  # unit id -> last commanded rate
        self.running_since: dict[str, int] = {}  # unit id -> first hour of the current run
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
                self.captured.add(payload_command)
        for message in self._read("removal_orders", config):
            order: RemovalOrder = self._decode("removal_orders", message)
            known = self.orders.get(order["order_id"])
            if known is None or order["version"] > known["version"]:
                self.orders[order["order_id"]] = order
        for message in self._read("capture_commands", config):
            command: CaptureCommand = self._decode("capture_commands", message)
            self._remember_command(command)
            self.planned.add((command["site"], command["hour_start_ms"]))
        write_head(self.settings.ledger_head, head_of(self.book.chain))
        logger.info(
            "recovered %d ledger entries, %d orders, %d commands",
            count,
            len(self.orders),
            len(self.commands),
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
        self.last_record_at[(record["site"], record["hour_start_ms"])] = time.monotonic()

    def on_telemetry(self, t: CaptureTelemetry, out: _Out) -> None:
        self.stats.telemetry += 1
        unit = self.settings.capture_units.get(t["site"])
        if unit is None or unit.unit_id != t["unit_id"]:
            raise RejectedError("unknown_unit", f"no capture unit {t['unit_id']} at {t['site']}")
        pending = self.commands.get(t["command_id"] or "")
        if pending is None:
            raise RejectedError(
                "unknown_command", f"telemetry for unknown command {t['command_id']}"
            )
        hours = (t["period_end_ms"] - t["period_start_ms"]) / HOUR_MS
        most = unit.capacity_kg_per_h * 1000 * max(hours, 0) * 1.05
        if not (math.isfinite(t["captured_g"]) and 0 <= t["captured_g"] <= most):
            raise RejectedError(
                "absurd_capture", f"{t['captured_g']} g in {hours:.2f} h exceeds the unit"
            )
        command = pending.command
        parasitic = t["electric_kwh"] * command["intensity_g_per_kwh"]
        net_mg = to_mg(t["captured_g"] - parasitic)
        self.captured.add(command["command_id"])
        site = self.book.sites.get((command["site"], command["hour_start_ms"]))
        weights = site.scope_mg if site else {}
        shares = split_by_key(net_mg, weights)
        payload = {
            "command_id": command["command_id"],
            "unit_id": t["unit_id"],
            "site": t["site"],
            "served_hour_ms": command["hour_start_ms"],
            "captured_g": t["captured_g"],
            "parasitic_g": parasitic,
            "electric_kwh": t["electric_kwh"],
            "intensity_g_per_kwh": command["intensity_g_per_kwh"],
        }
        if net_mg < 0 and site is not None:
            logger.warning(
                "capture %s emitted more than it captured: %s", t["telemetry_id"], payload
            )
            out.ledger += self.book.record_parasitic(
                site, -net_mg / 1000, t["telemetry_id"], now_ms=self.clock_ms()
            )
        out.ledger += self.book.record_removal(
            "capture_delivery",
            shares,
            t["telemetry_id"],
            removal_at_ms=t["period_end_ms"],
            payload=payload,
            now_ms=self.clock_ms(),
        )

    def step(self, out: _Out) -> None:
        """Plan capture, allocate, order and advance orders (no consumption)."""
        now = self.clock_ms()
        self._plan_capture(now, out)
        out.ledger += self.book.allocate(now)
        self._order(now, out)
        self._advance_orders(out)
        out.ledger += self.book.allocate(self.clock_ms())

    # -- capture ------------------------------------------------------------------------

    def _plan_capture(self, now: int, out: _Out) -> None:
        quiet = time.monotonic() - self.settings.plan_quiet_s
        window = self.settings.capture_window_h * HOUR_MS
        for (site_name, hour), last in sorted(self.last_record_at.items()):
            if last > quiet or (site_name, hour) in self.planned:
                continue
            site = self.book.sites.get((site_name, hour))
            unit = self.settings.capture_units.get(site_name)
            self.planned.add((site_name, hour))
            if site is None or unit is None or now > hour + HOUR_MS + window:
                continue
            command = self._command(unit.unit_id, site, now)
            if command is not None:
                out.commands.append(command)

    def _command(self, unit_id: str, site: SiteHour, now: int) -> CaptureCommand | None:
        unit = self.settings.capture_units[site.site]
        previous = self.rates.get(unit_id, 0.0)
        decision = plan(
            unit,
            it_energy_kwh=site.energy_kwh,
            obligation_g=site.obligation_mg / 1000,
            intensity_g_per_kwh=site.intensity_g_per_kwh,
            previous_rate_g_per_h=previous,
            running_h=(site.hour_ms - self.running_since.get(unit_id, site.hour_ms)) / HOUR_MS,
        )
        if decision.action == "stop" and previous == 0.0:
            logger.info("no capture at %s for %d: %s", site.site, site.hour_ms, decision.reason)
            return None
        command: CaptureCommand = {
            "command_id": command_id(site.site, unit_id, site.hour_ms),
            "site": site.site,
            "unit_id": unit_id,
            "hour_start_ms": site.hour_ms,
            "action": decision.action,
            "target_rate_g_per_h": decision.target_rate_g_per_h,
            "expected_capture_g": decision.expected_capture_g,
            "expected_parasitic_g": decision.expected_parasitic_g,
            "intensity_g_per_kwh": site.intensity_g_per_kwh,
            "reason": decision.reason,
            "issued_at_ms": now,
        }
        self.rates[unit_id] = decision.target_rate_g_per_h
        if decision.target_rate_g_per_h <= 0:
            self.running_since.pop(unit_id, None)
        else:
            self.running_since.setdefault(unit_id, site.hour_ms)
        self._remember_command(command)
        self.stats.commands += 1
        return command

    def _remember_command(self, command: CaptureCommand) -> None:
        site = self.book.sites.get((command["site"], command["hour_start_ms"]))
        net = to_mg(command["expected_capture_g"] - command["expected_parasitic_g"])
        shares = split_by_key(net, site.scope_mg if site else {})
        self.commands[command["command_id"]] = PendingCapture(command, shares)

    def _pending_capture_mg(self, scope: str, now: int) -> int:
        expire = (self.settings.capture_window_h + 1) * HOUR_MS
        return sum(
            p.shares_mg.get(scope, 0)
            for cid, p in self.commands.items()
            if cid not in self.captured and now <= p.command["issued_at_ms"] + expire
        )

    # -- credits ------------------------------------------------------------------------

    def _order(self, now: int, out: _Out) -> None:
        lead = round(self.settings.order_lead_h * HOUR_MS)
        target = round(self.settings.latency_target_h * HOUR_MS)
        for scope in sorted(self.book.scopes()):
            open_hours = list(self.book.open_hours(scope))
            if not open_hours:
                continue
            pending_orders = sum(
                o["quantity_g"] * 1000
                for o in self.orders.values()
                if o["scope"] == scope and o["status"] not in TERMINAL
            )
            need_mg = (
                self.book.uncovered_mg(scope)
                - self.book.pooled_mg(scope)
                - pending_orders
                - self._pending_capture_mg(scope, now)
            )
            if need_mg <= 0:
                continue
            oldest = open_hours[0].hour_ms
            deadline = min(oldest + HOUR_MS + target, quarter_end_ms(oldest))
            if need_mg < self.settings.min_lot_g * 1000 and now < deadline - lead:
                continue
            quantity_g = max(math.ceil(need_mg / 1000), self.settings.min_lot_g)
            out.orders.append(self._new_order(scope, quantity_g, deadline, open_hours, now))

    def _new_order(
        self, scope: str, quantity_g: int, deadline: int, hours: list[Any], now: int
    ) -> RemovalOrder:
        number = sum(1 for o in self.orders.values() if o["scope"] == scope)
        digest = hashlib.sha256(f"{scope}\0{number}".encode()).hexdigest()[:16]
        order: RemovalOrder = {
            "order_id": f"ord-{digest}-{number}",
            "idempotency_key": f"llcr-{digest}-{number}",
            "scope": scope,
            "method": self.method,
            "quantity_g": quantity_g,
            "status": "requested",
            "provider": self.provider.name,
            "provider_order_id": None,
            "serial_numbers": [],
            "retired_at_ms": None,
            "sequestered_at_ms": None,
            "deadline_ms": deadline,
            "hour_starts_ms": [a.hour_ms for a in hours][:100],
            "price_per_t": None,
            "currency": None,
            "reason": f"residual of {len(hours)} hour(s) after capture",
            "version": 0,
            "updated_at_ms": now,
        }
        self.orders[order["order_id"]] = order
        self.stats.orders_created += 1
        return order

    def _advance_orders(self, out: _Out) -> None:
        for order_id in sorted(self.orders):
            order = self.orders[order_id]
            if order["status"] in TERMINAL or time.monotonic() < self.next_try.get(order_id, 0):
                continue
            try:
                changed = self._advance(order, out)
            except ProviderUnavailableError as exc:
                self.stats.provider_errors += 1
                logger.warning("order %s: %s (will retry with the same key)", order_id, exc)
                self.next_try[order_id] = time.monotonic() + self.settings.poll_every_s
                continue
            except (RejectedOrderError, ContractError) as exc:
                changed = self._transition(order, "failed", reason=str(exc))
                self.stats.orders_failed += 1
                out.dead.append(self._order_dead_letter(changed, type(exc).__name__, str(exc)))
            self.next_try[order_id] = time.monotonic() + self.settings.poll_every_s
            if changed is not order:
                self.orders[order_id] = changed
                out.orders.append(changed)

    def _advance(self, order: RemovalOrder, out: _Out) -> RemovalOrder:
        """One step of the order's state machine; the same order if nothing changed."""
        if order["status"] == "requested":
            created = self.provider.create(
                key=order["idempotency_key"],
                method=order["method"],
                quantity_g=order["quantity_g"],
                reference=order["order_id"],
            )
            return self._transition(order, "confirmed", provider_order_id=created.id)
        provider_id = order["provider_order_id"] or ""
        seen = self.provider.get(
            provider_id, method=order["method"], quantity_g=order["quantity_g"]
        )
        if seen.status == "failed":
            return self._transition(
                order, "failed", reason=seen.failure_reason or "provider failed"
            )
        if seen.status == "confirmed":
            return order
        if order["status"] == "confirmed":
            order = self._transition(
                order,
                "delivered",
                serial_numbers=list(seen.serial_numbers),
                sequestered_at_ms=seen.sequestered_at_ms,
            )
            out.orders.append(order)
        retired = self.provider.retire(
            seen,
            key=order["idempotency_key"],
            beneficiary=order["scope"],
            quantity_g=order["quantity_g"],
        )
        order = self._transition(
            order,
            "retired",
            serial_numbers=list(retired.serial_numbers),
            retired_at_ms=retired.retired_at_ms,
            sequestered_at_ms=retired.sequestered_at_ms or order["sequestered_at_ms"],
        )
        self.stats.orders_retired += 1
        out.ledger += self.book.record_removal(
            "credit_retirement",
            {order["scope"]: order["quantity_g"] * 1000},
            order["order_id"],
            removal_at_ms=retired.retired_at_ms or self.clock_ms(),
            payload={
                "order_id": order["order_id"],
                "provider": order["provider"],
                "provider_order_id": order["provider_order_id"],
                "method": order["method"],
                "serial_numbers": order["serial_numbers"],
                "retired_at_ms": order["retired_at_ms"],
                "sequestered_at_ms": order["sequestered_at_ms"],
            },
            now_ms=self.clock_ms(),
        )
        return order

    def _transition(self, order: RemovalOrder, status: str, **changes: Any) -> RemovalOrder:
        updated: RemovalOrder = {**order, **changes}  # type: ignore[typeddict-item]
        updated["status"] = status  # type: ignore[typeddict-item]
        updated["version"] = order["version"] + 1
        updated["updated_at_ms"] = self.clock_ms()
        return updated

    # -- output -------------------------------------------------------------------------

    def _dead_letter(self, message: Message, code: str, reason: str) -> DeadLetter:
        self.stats.dead_letters += 1
        logger.warning(
            "rejected %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), reason
        )
        topic, partition, offset = position(message)
        return message_letter(
            COMPONENT,
            code,
            reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key=message.key(),
            value=message.value(),
            failed_at_ms=self.clock_ms(),
        )

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
