"""The removal-credit provider seam: a small REST contract and its httpx adapter.

The contract (docs/removal-provider.md) follows what registries and marketplaces of
permanent removal do: an order is created once per ``Idempotency-Key``, delivered as
serial-numbered credits (quantities in kg, three decimals: gram-exact) and retired on our
behalf with those serials. Every answer is checked against the order; an answer that
contradicts it raises :class:`ContractError` and nothing is settled on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, get_args

import httpx

from schemas.errors import LlcrError
from schemas.records import RemovalMethod

PERMANENT_METHODS: tuple[str, ...] = get_args(RemovalMethod)
ProviderStatus = Literal["confirmed", "delivered", "retired", "failed"]


class ProviderUnavailableError(LlcrError):
    """The provider could not answer now (5xx, timeout, network): retry with the same key."""


class RejectedOrderError(LlcrError):
    """The provider refused the order for good (4xx): the order fails with this reason."""


class ContractError(LlcrError):
    """The provider's answer contradicts the order (quantity, method, serials)."""


def require_permanent(method: str) -> RemovalMethod:
    if method not in PERMANENT_METHODS:
        raise LlcrError(
            f"removal method {method!r} is not a permanent removal; use one of "
            f"{', '.join(PERMANENT_METHODS)} (avoidance and nature-based offsets are refused)"
        )
    return method  # type: ignore[return-value]


def kg(quantity_g: int) -> str:
    return str((Decimal(quantity_g) / 1000).quantize(Decimal("0.001")))


def grams(quantity_kg: str) -> int:
    value = Decimal(str(quantity_kg)) * 1000
    if value != value.to_integral_value():
        raise ContractError(f"quantity {quantity_kg} kg is not a whole number of grams")
    return int(value)


def ms(timestamp: str | None) -> int | None:
    if timestamp is None:
        return None
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass(frozen=True)
class ProviderOrder:
    id: str
    status: ProviderStatus
    quantity_g: int
    method: str
    serial_numbers: tuple[str, ...] = ()
    sequestered_at_ms: int | None = None
    retired_at_ms: int | None = None
    failure_reason: str | None = None


class CreditApi(Protocol):
    """What the order desk needs of a credit provider (the contract's three calls)."""

    name: str

    def create(
        self, *, key: str, method: str, quantity_g: int, reference: str
    ) -> ProviderOrder: ...

    def get(self, provider_id: str, *, method: str, quantity_g: int) -> ProviderOrder: ...

    def retire(
        self, order: ProviderOrder, *, key: str, beneficiary: str, quantity_g: int
    ) -> ProviderOrder: ...


class CreditProvider:
    """httpx adapter for the contract; one instance per provider base URL."""

    def __init__(
        self, base_url: str, *, token: str = "", timeout_s: float = 5.0, name: str = "provider"
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.name = name
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def create(self, *, key: str, method: str, quantity_g: int, reference: str) -> ProviderOrder:
        body = {"method": method, "quantity_kg": kg(quantity_g), "reference": reference}
        answer = self._call("POST", "/v1/orders", json=body, headers={"Idempotency-Key": key})
        order = self._order(answer)
        self._check(order, method, quantity_g)
        return order

    def get(self, provider_id: str, *, method: str, quantity_g: int) -> ProviderOrder:
        order = self._order(self._call("GET", f"/v1/orders/{provider_id}"))
        self._check(order, method, quantity_g)
        return order

    def retire(
        self, order: ProviderOrder, *, key: str, beneficiary: str, quantity_g: int
    ) -> ProviderOrder:
        body = {"beneficiary": beneficiary, "serial_numbers": list(order.serial_numbers)}
        answer = self._call(
            "POST",
            f"/v1/orders/{order.id}/retirement",
            json=body,
            headers={"Idempotency-Key": f"{key}:retire"},
        )
        retired = self._order(answer)
        self._check(retired, order.method, quantity_g)
        if retired.status != "retired" or retired.retired_at_ms is None:
            raise ContractError(f"retirement of {order.id} answered status {retired.status}")
        unknown = set(retired.serial_numbers) - set(order.serial_numbers)
        if unknown or not retired.serial_numbers:
            raise ContractError(
                f"retirement of {order.id} names serials that were not delivered: "
                f"{sorted(unknown) or 'none'}"
            )
        return retired

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # includes timeouts
            raise ProviderUnavailableError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderUnavailableError(f"{self.name}: HTTP {response.status_code}")
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ProviderUnavailableError(f"{self.name}: answer is not JSON") from exc
        if response.status_code >= 400:
            raise RejectedOrderError(
                f"{self.name}: HTTP {response.status_code}: {body.get('error', body)}"
            )
        return body

    @staticmethod
    def _order(body: dict[str, Any]) -> ProviderOrder:
        try:
            return ProviderOrder(
                id=str(body["id"]),
                status=body["status"],
                quantity_g=grams(body["quantity_kg"]),
                method=str(body["method"]),
                serial_numbers=tuple(body.get("serial_numbers") or ()),
                sequestered_at_ms=ms(body.get("sequestered_at")),
                retired_at_ms=ms(body.get("retired_at")),
                failure_reason=body.get("failure_reason"),
            )
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ContractError(f"malformed order in the provider's answer: {exc}") from exc

    @staticmethod
    def _check(order: ProviderOrder, method: str, quantity_g: int) -> None:
        if order.status not in get_args(ProviderStatus):
            raise ContractError(f"order {order.id}: unknown status {order.status!r}")
        if order.quantity_g != quantity_g:
            raise ContractError(
                f"order {order.id}: provider says {kg(order.quantity_g)} kg, "
                f"we ordered {kg(quantity_g)} kg"
            )
        if order.method != method:
            raise ContractError(f"order {order.id}: method {order.method}, we ordered {method}")
