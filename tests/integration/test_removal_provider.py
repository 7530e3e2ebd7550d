"""The credit-provider adapter against the simulated provider, a real HTTP server."""

from __future__ import annotations

import pytest

from schemas.errors import LlcrError
from streams.removal.provider import (
    ContractError,
    CreditProvider,
    ProviderUnavailableError,
    RejectedOrderError,
    require_permanent,
)
from streams.removal.provider_sim import Faults, SimProvider


def test_create_deliver_retire_with_serials() -> None:
    with SimProvider() as sim:
        client = CreditProvider(sim.url, timeout_s=2)
        order = client.create(key="k1", method="biochar", quantity_g=1_234_567, reference="o1")
        assert order.status == "delivered" and order.quantity_g == 1_234_567
        assert len(order.serial_numbers) == 2  # one per started tonne
        retired = client.retire(order, key="k1", beneficiary="tenant:a", quantity_g=1_234_567)
        assert retired.status == "retired" and retired.retired_at_ms is not None
        assert retired.sequestered_at_ms is not None
        again = client.create(key="k1", method="biochar", quantity_g=1_234_567, reference="o1")
        assert again.id == order.id and len(sim.orders) == 1
        client.close()


def test_a_timed_out_create_retried_with_its_key_buys_once() -> None:
    with SimProvider(faults=Faults(timeout_rate=1.0, late_s=1.0)) as sim:
        client = CreditProvider(sim.url, timeout_s=0.3)
        with pytest.raises(ProviderUnavailableError, match="Timeout"):
            client.create(key="k2", method="dac", quantity_g=5000, reference="o2")
        assert len(sim.orders) == 1  # the provider did create it
        sim.faults.timeout_rate = 0.0
        order = client.create(key="k2", method="dac", quantity_g=5000, reference="o2")
        assert len(sim.orders) == 1 and order.id == sim.orders["k2"].id
        client.close()


def test_contradicting_answers_and_refusals() -> None:
    with SimProvider(faults=Faults(wrong_quantity_rate=1.0), delivery_delay_s=60) as sim:
        client = CreditProvider(sim.url, timeout_s=2)
        with pytest.raises(ContractError, match=r"we ordered 5\.000 kg"):
            client.create(key="k3", method="dac", quantity_g=5000, reference="o3")
        with pytest.raises(RejectedOrderError, match="not offered"):
            client.create(key="k4", method="forestry", quantity_g=5000, reference="o4")
        client.close()
    with pytest.raises(LlcrError, match="not a permanent removal"):
        require_permanent("avoided_deforestation")
    assert require_permanent("enhanced_weathering") == "enhanced_weathering"
