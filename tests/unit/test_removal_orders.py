"""The order desk without Kafka or HTTP: when it orders, and each order's state machine,
driven by an in-memory provider behind the same ``CreditApi`` seam the httpx adapter
fills (the HTTP contract itself is tested against a real server in
tests/integration/test_removal_provider.py)."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from schemas.records import EmissionHour
from schemas.units import HOUR_MS
from streams.removal.core import Book, Policy
from streams.removal.orders import OrderDesk
from streams.removal.provider import (
    ProviderOrder,
    ProviderUnavailableError,
    RejectedOrderError,
)
from streams.removal.stats import ActionStats
from streams.settings import ActionsSettings
from tests.examples import EXAMPLES, T0


class MemoryProvider:
    """Orders in a dict; ``fail_next`` raises the given errors on the next calls."""

    name = "memory"

    def __init__(self) -> None:
        self.orders: dict[str, ProviderOrder] = {}
        self.keys: dict[str, str] = {}  # idempotency key -> provider id
        self.calls: list[str] = []
        self.fail_next: list[Exception] = []
        self.deliver = True

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.fail_next:
            raise self.fail_next.pop(0)

    def create(self, *, key: str, method: str, quantity_g: int, reference: str) -> ProviderOrder:
        self._maybe_fail("create")
        if key not in self.keys:
            provider_id = f"p{len(self.orders)}"
            self.keys[key] = provider_id
            self.orders[provider_id] = ProviderOrder(provider_id, "confirmed", quantity_g, method)
        return self.orders[self.keys[key]]

    def get(self, provider_id: str, *, method: str, quantity_g: int) -> ProviderOrder:
        self._maybe_fail("get")
        order = self.orders[provider_id]
        if self.deliver and order.status == "confirmed":
            order = replace(order, status="delivered", serial_numbers=("S1",), sequestered_at_ms=5)
            self.orders[provider_id] = order
        return order

    def retire(
        self, order: ProviderOrder, *, key: str, beneficiary: str, quantity_g: int
    ) -> ProviderOrder:
        self._maybe_fail("retire")
        retired = replace(order, status="retired", retired_at_ms=T0 + 2 * HOUR_MS)
        self.orders[order.id] = retired
        return retired


def desk_with(grams: float, **settings: Any) -> tuple[OrderDesk, MemoryProvider, list[float]]:
    """A desk over one emission hour of ``grams``; the list is its monotonic clock."""
    config = ActionsSettings(min_lot_g=1000, poll_every_s=1.0, **settings)
    book = Book(Policy(buffer=0.0))
    record: Any = copy.deepcopy(EXAMPLES["emissions_hourly"])
    record.update(record_id="r1", hour_start_ms=T0)
    record["average"]["emissions_g"] = grams
    book.record_emission(EmissionHour(**record), T0 + HOUR_MS)  # type: ignore[typeddict-item]
    provider = MemoryProvider()
    now = [0.0]
    desk = OrderDesk(
        config, book, provider, ActionStats(), lambda: T0 + HOUR_MS, monotonic=lambda: now[0]
    )
    return desk, provider, now


def no_capture(scope: str, now: int) -> int:
    return 0


def test_a_residual_is_ordered_once_and_walks_to_retired_with_one_ledger_entry() -> None:
    desk, provider, now = desk_with(2500.0)
    created = desk.order(T0 + HOUR_MS, no_capture)
    assert [(o["quantity_g"], o["status"]) for o in created] == [(2500, "requested")]
    assert desk.order(T0 + HOUR_MS, no_capture) == []  # an open order covers it
    first = desk.advance()
    assert [o["status"] for o in first.orders] == ["confirmed"] and first.ledger == []
    now[0] += 1.0
    second = desk.advance()
    assert [o["status"] for o in second.orders] == ["delivered", "retired"]
    assert [(e["kind"], e["quantity_g"]) for e in second.ledger] == [("credit_retirement", 2500.0)]
    assert [o["version"] for o in second.orders] == [2, 3]
    assert provider.calls == ["create", "get", "retire"]
    now[0] += 1.0
    assert desk.advance().orders == []  # retired is terminal: no more calls
    assert provider.calls == ["create", "get", "retire"]


def test_a_small_residual_waits_for_the_lot_until_its_deadline_is_near() -> None:
    desk, _, _ = desk_with(400.0, order_lead_h=6.0, latency_target_h=24.0)
    assert desk.order(T0 + HOUR_MS, no_capture) == []  # 400 g < 1000 g, deadline far
    near = T0 + HOUR_MS + 24 * HOUR_MS - 6 * HOUR_MS
    assert [o["quantity_g"] for o in desk.order(near, no_capture)] == [1000]  # the lot


def test_expected_capture_is_not_ordered_twice() -> None:
    desk, _, _ = desk_with(2500.0)
    assert desk.order(T0 + HOUR_MS, lambda scope, now: 2500_000) == []
    assert [o["quantity_g"] for o in desk.order(T0 + HOUR_MS, lambda s, n: 1000_000)] == [1500]


def test_an_unavailable_provider_is_retried_with_the_same_key_after_the_poll_interval() -> None:
    desk, provider, now = desk_with(2500.0)
    [order] = desk.order(T0 + HOUR_MS, no_capture)
    provider.fail_next = [ProviderUnavailableError("down")]
    assert desk.advance().orders == [] and desk.stats.provider_errors == 1
    assert desk.advance().orders == []  # not due yet: no call
    assert provider.calls == ["create"]
    now[0] += 1.0
    assert [o["status"] for o in desk.advance().orders] == ["confirmed"]
    assert list(provider.keys) == [order["idempotency_key"]]  # one provider order


def test_a_refused_order_fails_with_its_reason_and_is_reported() -> None:
    desk, provider, _ = desk_with(2500.0)
    desk.order(T0 + HOUR_MS, no_capture)
    provider.fail_next = [RejectedOrderError("method not offered")]
    out = desk.advance()
    assert [(o["status"], o["reason"]) for o in out.orders] == [("failed", "method not offered")]
    assert [(code, reason) for _, code, reason in out.failed] == [
        ("RejectedOrderError", "method not offered")
    ]
    assert desk.stats.orders_failed == 1 and out.ledger == []


def test_a_recovered_order_keeps_its_newest_version() -> None:
    desk, _, _ = desk_with(2500.0)
    [order] = desk.order(T0 + HOUR_MS, no_capture)
    newer = {**order, "status": "confirmed", "version": 1, "provider_order_id": "p0"}
    desk.recovered(newer)  # type: ignore[arg-type]
    desk.recovered(order)  # an older state read later changes nothing
    assert desk.orders[order["order_id"]]["version"] == 1
