"""A simulated removal-credit provider: a real HTTP server on 127.0.0.1 that speaks the
contract of :mod:`streams.removal.provider`, for `llcr up` and tests.

Orders are created once per Idempotency-Key, delivered ``delivery_delay_s`` (on the
server's clock) after creation with one serial per started tonne, and retired on request.
Faults can be injected: ``fail_rate`` answers 500 before doing anything, ``timeout_rate``
does the work and then answers too late (the client times out although the order exists:
what idempotency keys are for), ``wrong_quantity_rate`` confirms a different quantity.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.jsonhttp import JsonServer, Reply, json_body
from streams.removal.provider import PERMANENT_METHODS, grams, kg

logger = logging.getLogger(__name__)


@dataclass
class Faults:
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    wrong_quantity_rate: float = 0.0
    late_s: float = 6.0  # how late a "timeout" answers
    seed: int = 0


@dataclass
class SimOrder:
    id: str
    method: str
    quantity_g: int
    reference: str
    created_ms: int
    confirmed_quantity_g: int
    serials: list[str] = field(default_factory=list)
    retired_ms: int | None = None
    beneficiary: str | None = None


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class SimProvider:
    """The server; use as a context manager. ``calls`` counts requests by outcome."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        delivery_delay_s: float = 0.0,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.faults = faults or Faults()
        self.delivery_delay_ms = round(delivery_delay_s * 1000)
        self.clock_ms = clock_ms
        self.orders: dict[str, SimOrder] = {}  # by idempotency key
        self.by_id: dict[str, SimOrder] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._random = random.Random(self.faults.seed)
        self._server = JsonServer(self._serve, host=host, port=port)

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> SimProvider:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.close()

    def _serve(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        try:
            body = json_body(raw)
        except ValueError:
            body = None
        status, answer, late = self.handle(method, path, headers.get("idempotency-key"), body)
        return Reply(status, answer, self.faults.late_s if late else 0.0)

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    # -- the contract -------------------------------------------------------------------

    def handle(self, method: str, path: str, key: str | None, body: Any) -> tuple[int, Any, bool]:
        """(status, body, answer late) for one request."""
        with self._lock:
            if self._roll(self.faults.fail_rate):
                self._count("fail")
                return 500, {"error": "injected failure"}, False
            late = self._roll(self.faults.timeout_rate)
            parts = path.strip("/").split("/")
            if method == "POST" and parts == ["v1", "orders"]:
                status, answer = self._create(key, body)
            elif method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "orders"]:
                status, answer = self._get(parts[2])
            elif method == "POST" and len(parts) == 4 and parts[3] == "retirement":
                status, answer = self._retire(parts[2], body)
            else:
                status, answer = 404, {"error": f"no route {method} {path}"}
            self._count(f"{method} {parts[-1] if parts else ''} {status}{' late' if late else ''}")
            return status, answer, late

    def _create(self, key: str | None, body: Any) -> tuple[int, Any]:
        if not key:
            return 400, {"error": "Idempotency-Key header required"}
        if key in self.orders:
            return 200, self._view(self.orders[key])
        try:
            method, quantity_g = str(body["method"]), grams(body["quantity_kg"])
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            return 400, {"error": f"bad order: {exc}"}
        if method not in PERMANENT_METHODS:
            return 400, {"error": f"method {method} is not offered"}
        if quantity_g <= 0:
            return 400, {"error": "quantity must be positive"}
        confirmed = quantity_g + 1000 if self._roll(self.faults.wrong_quantity_rate) else quantity_g
        order = SimOrder(
            f"po_{len(self.orders) + 1:06d}",
            method,
            quantity_g,
            str(body.get("reference", "")),
            self.clock_ms(),
            confirmed,
        )
        self.orders[key] = self.by_id[order.id] = order
        return 201, self._view(order)

    def _get(self, order_id: str) -> tuple[int, Any]:
        order = self.by_id.get(order_id)
        if order is None:
            return 404, {"error": f"no order {order_id}"}
        return 200, self._view(order)

    def _retire(self, order_id: str, body: Any) -> tuple[int, Any]:
        order = self.by_id.get(order_id)
        if order is None:
            return 404, {"error": f"no order {order_id}"}
        if not self._delivered(order):
            return 409, {"error": "not delivered yet"}
        if order.retired_ms is None:
            order.retired_ms = self.clock_ms()
            order.beneficiary = str((body or {}).get("beneficiary", ""))
        return 200, self._view(order)

    def _delivered(self, order: SimOrder) -> bool:
        if order.serials:
            return True
        if self.clock_ms() - order.created_ms < self.delivery_delay_ms:
            return False
        tonnes = max(1, -(-order.confirmed_quantity_g // 1_000_000))
        order.serials = [
            f"LLCR-SIM-{order.method.upper()}-{order.id}-{n:04d}" for n in range(tonnes)
        ]
        return True

    def _view(self, order: SimOrder) -> dict[str, Any]:
        delivered = self._delivered(order)
        status = "retired" if order.retired_ms else "delivered" if delivered else "confirmed"
        return {
            "id": order.id,
            "status": status,
            "method": order.method,
            "quantity_kg": kg(order.confirmed_quantity_g),
            "reference": order.reference,
            "serial_numbers": order.serials,
            "sequestered_at": _iso(order.created_ms) if delivered else None,
            "retired_at": _iso(order.retired_ms),
        }
