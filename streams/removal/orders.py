"""Credit orders for the removal service: when to order, and each order's state machine
(requested → confirmed → delivered → retired, or failed with a reason).

Every provider call carries the order's idempotency key, so a retry (or a restart that
resumes an order from its last persisted state) never buys twice. No Kafka: the service
publishes the order states and ledger entries this returns.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.records import LedgerEntry, RemovalOrder
from schemas.units import HOUR_MS
from streams.removal.core import Book, HourAccount, quarter_end_ms
from streams.removal.provider import (
    ContractError,
    CreditApi,
    ProviderUnavailableError,
    RejectedOrderError,
    require_permanent,
)
from streams.removal.stats import ActionStats
from streams.settings import ActionsSettings

logger = logging.getLogger(__name__)

TERMINAL = ("retired", "failed")


@dataclass
class OrderOutput:
    """What one pass of the desk changed: order states, ledger entries, failed orders."""

    orders: list[RemovalOrder] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    failed: list[tuple[RemovalOrder, str, str]] = field(default_factory=list)  # code, reason


class OrderDesk:
    """The open orders of every scope, advanced one provider call at a time."""

    def __init__(
        self,
        settings: ActionsSettings,
        book: Book,
        provider: CreditApi,
        stats: ActionStats,
        clock_ms: Callable[[], int],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.method = require_permanent(settings.method)
        self.book = book
        self.provider = provider
        self.stats = stats
        self.clock_ms = clock_ms
        self.monotonic = monotonic
        self.orders: dict[str, RemovalOrder] = {}
        self.next_try: dict[str, float] = {}  # order id -> monotonic time of the next call

    def recovered(self, order: RemovalOrder) -> None:
        """An order state read back after a restart (the newest version wins)."""
        known = self.orders.get(order["order_id"])
        if known is None or order["version"] > known["version"]:
            self.orders[order["order_id"]] = order

    # -- ordering -----------------------------------------------------------------------

    def order(self, now: int, pending_capture_mg: Callable[[str, int], int]) -> list[RemovalOrder]:
        """New orders for each scope's residual after pooled removal, open orders and
        expected capture: at least ``min_lot_g``, when the residual reaches it or when the
        oldest uncovered hour's deadline (capped at its quarter's end) is near."""
        lead = round(self.settings.order_lead_h * HOUR_MS)
        target = round(self.settings.latency_target_h * HOUR_MS)
        created = []
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
                - pending_capture_mg(scope, now)
            )
            if need_mg <= 0:
                continue
            oldest = open_hours[0].hour_ms
            deadline = min(oldest + HOUR_MS + target, quarter_end_ms(oldest))
            if need_mg < self.settings.min_lot_g * 1000 and now < deadline - lead:
                continue
            quantity_g = max(math.ceil(need_mg / 1000), self.settings.min_lot_g)
            created.append(self._new_order(scope, quantity_g, deadline, open_hours, now))
        return created

    def _new_order(
        self, scope: str, quantity_g: int, deadline: int, hours: list[HourAccount], now: int
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

    # -- the state machine --------------------------------------------------------------

    def advance(self) -> OrderOutput:
        """One step of every open order whose next try is due."""
        out = OrderOutput()
        for order_id in sorted(self.orders):
            order = self.orders[order_id]
            if order["status"] in TERMINAL or self.monotonic() < self.next_try.get(order_id, 0):
                continue
            try:
                changed = self._advance(order, out)
            except ProviderUnavailableError as exc:
                self.stats.provider_errors += 1
                logger.warning("order %s: %s (will retry with the same key)", order_id, exc)
                self.next_try[order_id] = self.monotonic() + self.settings.poll_every_s
                continue
            except (RejectedOrderError, ContractError) as exc:
                changed = self._transition(order, "failed", reason=str(exc))
                self.stats.orders_failed += 1
                out.failed.append((changed, type(exc).__name__, str(exc)))
            self.next_try[order_id] = self.monotonic() + self.settings.poll_every_s
            if changed is not order:
                self.orders[order_id] = changed
                out.orders.append(changed)
        return out

    def _advance(self, order: RemovalOrder, out: OrderOutput) -> RemovalOrder:
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
