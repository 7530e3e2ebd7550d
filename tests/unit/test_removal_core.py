"""Removal accounting without I/O: the ledger chain, obligations, allocation, capture."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.records import EmissionHour
from schemas.units import HOUR_MS, split_by_key
from streams.removal.capture import plan, ramped_capture_g
from streams.removal.core import (
    Book,
    Policy,
    RejectedError,
    quarter_end_ms,
    to_mg,
)
from streams.removal.ledger import Chain, Head, verify
from streams.settings import CaptureUnitConfig
from tests.examples import EXAMPLES, T0


def emission(record_id: str, hour: int, grams: float, **changes: Any) -> EmissionHour:
    r: Any = copy.deepcopy(EXAMPLES["emissions_hourly"])
    r.update(record_id=record_id, hour_start_ms=hour, **changes)
    r["average"]["emissions_g"] = grams
    return r  # type: ignore[no-any-return]


def chain_of(n: int) -> list[dict[str, Any]]:
    chain = Chain()
    return [
        dict(
            chain.append(
                "capture_delivery",
                "tenant:a",
                float(i),
                f"r{i}",
                hour_start_ms=None,
                payload={"removal_at_ms": i},
                recorded_at_ms=i,
            )
        )
        for i in range(n)
    ]


def test_the_chain_verifies_and_names_the_first_edited_missing_or_moved_entry() -> None:
    entries = chain_of(6)
    assert verify(entries) == (6, None)
    edited = copy.deepcopy(entries)
    edited[3]["quantity_g"] = 3.5
    count, broken = verify(edited)
    assert count == 3 and broken is not None and broken.seq == 3 and "edited" in broken.reason
    rehashed = copy.deepcopy(edited)  # a forger who also recomputes the hash breaks the link
    from streams.removal.ledger import entry_hash

    rehashed[3]["hash"] = entry_hash(rehashed[3])
    broken_link = verify(rehashed)[1]
    assert broken_link is not None and broken_link.seq == 4 and "prev_hash" in broken_link.reason
    missing = verify(entries[:2] + entries[3:])[1]
    assert missing is not None and missing.seq == 3 and "missing" in missing.reason


def test_a_chain_has_one_id_and_a_second_chain_or_a_fork_breaks_it() -> None:
    first, second = chain_of(4), chain_of(3)
    assert len({e["chain_id"] for e in first}) == 1 and first[0]["chain_id"]
    assert first[0]["chain_id"] != second[0]["chain_id"]
    # the same entries again (a redelivery, rows not merged yet) verify
    doubled = [e for entry in first for e in (entry, dict(entry))]
    assert verify(doubled) == (4, None)
    # a second run's ledger in the same store is not a continuation of the first
    count, mixed = verify(first + second)
    assert count == 4 and mixed is not None and "second chain" in mixed.reason
    # a different entry at a seq already taken is a fork, even with a valid hash
    from streams.removal.ledger import entry_hash

    forged = dict(first[2], quantity_g=99.0)
    forged["hash"] = entry_hash(forged)
    forked = verify([*first[:3], forged, first[3]])[1]
    assert forked is not None and forked.seq == 2 and "fork" in forked.reason
    # the chain id is hashed: moving an entry to another chain is an edit
    moved = [*first[:1], dict(first[1], chain_id="f" * 32)]
    assert verify(moved)[1] is not None


def tampered_tails(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The tail tampers a store can suffer that the chain alone does not show (each still
    chains from genesis)."""

    def continued(base: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        chain = Chain()
        for entry in base:
            chain.follow(entry)
        extra = [
            dict(
                chain.append(
                    "credit_retirement",
                    "tenant:a",
                    0.001,
                    f"forged{i}",
                    hour_start_ms=None,
                    payload={"removal_at_ms": i},
                    recorded_at_ms=i,
                )
            )
            for i in range(n)
        ]
        return [*base, *extra]

    return {
        "last deleted": entries[:-1],
        "last 20 deleted": entries[:-20],
        "tail of 30 re-chained": continued(entries[:-30], 30),
        "forged entry appended": continued(entries, 1),
        "all deleted": [],
    }


def test_a_head_checkpoint_shows_a_deleted_rewritten_or_forged_tail() -> None:
    entries = chain_of(40)
    last = entries[-1]
    head = Head(last["chain_id"], last["seq"], last["hash"])
    assert verify(entries, head) == (40, None)
    for name, tampered in tampered_tails(entries).items():
        assert verify(tampered)[1] is None, name  # the chain alone: "OK"
        broken = verify(tampered, head)[1]
        assert broken is not None, name
        reason = {
            "last deleted": "entries 39..39 are missing",
            "last 20 deleted": "entries 20..39 are missing",
            "tail of 30 re-chained": "the tail was rewritten",
            "forged entry appended": "after the head checkpoint at seq 39",
            "all deleted": "entries 0..39 are missing",
        }[name]
        assert reason in broken.reason, (name, broken)
    # the service recovering entries it published just before it stopped: beyond is fine
    behind = Head(entries[30]["chain_id"], 30, entries[30]["hash"])
    assert verify(entries, behind, beyond_head=True) == (40, None)
    assert verify(entries, behind)[1] is not None
    # an empty ledger's head, and a head round-tripped through its file text
    assert verify([], Head("", -1, "0" * 64)) == (0, None)
    assert Head.from_json(head.to_json()) == head
    for text in ("", "{}", '{"chain_id": "a", "seq": -2, "hash": "00"}', "[1]"):
        with pytest.raises(ValueError, match="not a ledger head checkpoint"):
            Head.from_json(text)


def test_entries_of_v1_chains_without_an_id_still_verify_and_decode() -> None:
    entries = chain_of(3)
    v1 = []
    head = "0" * 64
    from streams.removal.ledger import entry_hash

    for entry in entries:
        old = {k: v for k, v in entry.items() if k != "chain_id"}
        old["prev_hash"] = head
        old["hash"] = entry_hash(old)
        head = old["hash"]
        v1.append(old)
    assert verify(v1) == (3, None)
    # an old writer's bytes decode with chain_id ''
    import fastavro

    from schemas.codec import Codec, historical_schemas

    old_schema = next(s for s in historical_schemas() if s.name == "ledger_entry")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old_schema.parsed, {**v1[0], "hour_start_ms": None})
    data = b"\xc3\x01" + old_schema.fingerprint + body.getvalue()
    decoded = Codec().decode("ledger_entry", data)
    assert decoded["chain_id"] == "" and decoded["hash"] == v1[0]["hash"]


def test_quarter_end_is_the_hard_deadline() -> None:
    assert quarter_end_ms(1_678_406_400_000) == 1_680_307_200_000  # 2023-03-10 -> 2023-04-01
    assert quarter_end_ms(1_703_980_800_000) == 1_704_067_200_000  # 2023-12-31 -> 2024-01-01


@given(st.integers(0, 10**9), st.dictionaries(st.text(max_size=3), st.integers(0, 10**7)))
def test_largest_remainder_split_is_exact(total: int, weights: dict[str, int]) -> None:
    parts = split_by_key(total, weights)
    if total and any(w > 0 for w in weights.values()):
        assert sum(parts.values()) == total
    else:
        assert parts == {}


def test_obligations_revisions_fifo_allocation_and_the_fold() -> None:
    book = Book(Policy(buffer=0.1))
    h1, h2 = T0, T0 + HOUR_MS
    entries = book.record_emission(emission("a", h1, 100.0), 1)
    entries += book.record_emission(emission("b", h2, 50.0), 2)
    assert book.record_emission(emission("a", h1, 100.0), 3) == []  # a duplicate: nothing
    tenant = EXAMPLES["emissions_hourly"]["tenant"]
    scope = f"tenant:{tenant}"
    assert book.hours[(scope, h1)].obligation_mg == 110_000
    entries += book.record_removal(
        "capture_delivery", {scope: 130_000}, "t1", removal_at_ms=5, payload={}, now_ms=5
    )
    entries += book.allocate(6)
    # earliest hour first: h1 fully (110 g), the rest (20 g) to h2
    assert book.hours[(scope, h1)].covered_mg == 110_000
    assert book.hours[(scope, h1)].covered_at_ms == 6
    assert book.hours[(scope, h2)].covered_mg == 20_000
    # h1 revised down to 80 g: 22 g are released and go to h2
    entries += book.record_emission(emission("a", h1, 80.0, status="revised", revision=1), 7)
    assert entries[-1]["kind"] == "emission_revision" and entries[-1]["quantity_g"] == -22.0
    entries += book.allocate(8)
    assert book.hours[(scope, h1)].covered_mg == 88_000
    assert book.hours[(scope, h2)].covered_mg == 42_000
    assert book.uncovered_mg(scope) == 55_000 - 42_000
    # the fold of the ledger rebuilds the same state
    again = Book(Policy(buffer=0.1))
    for entry in entries:
        again.apply(entry)
    assert again.hours == book.hours
    assert again.chain == book.chain
    assert [vars(lot) for lot in again.pool[scope]] == [vars(lot) for lot in book.pool[scope]]
    assert verify(entries) == (len(entries), None)
    assert json.loads(entries[0]["payload_json"])["intensity_event_ids"]


def test_unpriced_energy_is_owed_at_a_conservative_estimate_until_its_price_arrives() -> None:
    book = Book(Policy(buffer=0.1, unpriced_zone_g_per_kwh={"FR": 100.0}))
    scope = f"tenant:{EXAMPLES['emissions_hourly']['tenant']}"
    # no intensity at all: 2 kWh owed at 1,200 g/kWh, never 0 g
    unpriced = emission("u", T0, 0.0, energy_kwh=2.0)
    unpriced["average"] = None
    [entry] = book.record_emission(unpriced, 1)
    payload = json.loads(entry["payload_json"])
    assert entry["quantity_g"] == pytest.approx(2.0 * 1200 * 1.1)
    assert payload["emissions_g"] == 0.0 and payload["estimated_g"] == pytest.approx(2400.0)
    assert payload["unpriced_kwh"] == 2.0 and payload["estimate_g_per_kwh"] == 1200.0
    # half the hour priced at 300 g/kWh: the other half at the estimate
    half = emission("h", T0 + HOUR_MS, 150.0, energy_kwh=1.0)
    half["average"] = dict(half["average"], priced_fraction=0.5, intensity_g_per_kwh=300.0)
    [entry] = book.record_emission(half, 2)
    assert entry["quantity_g"] == pytest.approx((150.0 + 0.5 * 1200) * 1.1)
    # a zone estimate below the hour's own priced intensity is raised to it
    fr = emission("f", T0, 150.0, zone="FR", energy_kwh=1.0)
    fr["average"] = dict(fr["average"], priced_fraction=0.5, intensity_g_per_kwh=300.0)
    [entry] = book.record_emission(fr, 3)
    assert json.loads(entry["payload_json"])["estimate_g_per_kwh"] == 300.0
    # covered on the estimate, then priced at 250 g/kWh: the obligation falls to the
    # measured value and the excess is released for the next hour
    entries = book.record_removal(
        "credit_retirement", {scope: 10**7}, "c1", removal_at_ms=4, payload={}, now_ms=4
    )
    entries += book.allocate(5)
    assert book.hours[(scope, T0)].remaining_mg == 0
    priced = emission("u", T0, 500.0, energy_kwh=2.0, status="revised", revision=1)
    [revision] = book.record_emission(priced, 6)
    assert revision["quantity_g"] == pytest.approx((500.0 - 2400.0) * 1.1)
    payload = json.loads(revision["payload_json"])
    assert payload["estimated_g"] == 0.0 and payload["estimate_g_per_kwh"] is None
    book.allocate(7)
    account = book.hours[(scope, T0)]
    assert account.obligation_mg == to_mg((500.0 + 150.0 + 0.5 * 300) * 1.1)
    assert account.covered_mg == account.obligation_mg  # the excess went back to the pool


def test_absurd_and_negative_obligations_are_rejected() -> None:
    book = Book(Policy())
    with pytest.raises(RejectedError) as negative:
        book.record_emission(emission("n", T0, -5.0), 1)
    assert negative.value.code == "negative_obligation"
    with pytest.raises(RejectedError) as absurd:
        book.record_emission(emission("x", T0, 5e12), 1)
    assert absurd.value.code == "absurd_obligation"
    assert book.chain.next_seq == 0


UNIT = CaptureUnitConfig(
    unit_id="u1",
    capacity_kg_per_h=10,
    thermal_kwh_per_t=2000,
    electric_kwh_per_t=2700,
    recoverable_heat_fraction=0.6,
    min_net_g=1,
)


def test_capture_runs_only_when_net_removal_is_positive() -> None:
    # 40 kWh IT -> 24 kWh heat -> 12 kg by heat; capacity 10 kg; obligation 16 kg
    clean = plan(
        UNIT,
        it_energy_kwh=40,
        obligation_g=16_000,
        intensity_g_per_kwh=300,
        previous_rate_g_per_h=0,
    )
    assert clean.action == "scale_up" and clean.expected_capture_g == 10_000
    assert clean.expected_parasitic_g == pytest.approx(10_000 * 2700 / 1e6 * 300)
    assert "capacity" in clean.reason
    dirty = plan(
        UNIT,
        it_energy_kwh=40,
        obligation_g=16_000,
        intensity_g_per_kwh=380,  # 2.7 kWh/kg x 380 g/kWh > 1 kg per kg captured
        previous_rate_g_per_h=10_000,
    )
    assert dirty.action == "stop" and dirty.target_rate_g_per_h == 0
    young = plan(
        UNIT.model_copy(update={"min_run_h": 3}),
        it_energy_kwh=40,
        obligation_g=16_000,
        intensity_g_per_kwh=380,
        previous_rate_g_per_h=10_000,
        running_h=1,
    )
    assert young.action == "hold" and young.target_rate_g_per_h == 10_000
    assert "minimum run time" in young.reason and young.expected_net_g < 0
    by_heat = plan(
        UNIT,
        it_energy_kwh=10,
        obligation_g=16_000,
        intensity_g_per_kwh=100,
        previous_rate_g_per_h=10_000,
    )
    assert by_heat.action == "scale_down" and by_heat.expected_capture_g == 3_000
    small = plan(
        UNIT,
        it_energy_kwh=40,
        obligation_g=500,
        intensity_g_per_kwh=100,
        previous_rate_g_per_h=0,
    )
    assert small.expected_capture_g == 500 and "obligation" in small.reason


def test_ramping_capture_is_the_exact_integral() -> None:
    # 0 -> 10 kg/h at 20 kg/h per hour: 0.5 h ramp (2.5 kg) + 0.5 h at 10 kg/h (5 kg)
    assert ramped_capture_g(0, 10_000, 20_000, HOUR_MS) == (7_500, 10_000)
    assert ramped_capture_g(10_000, 0, 20_000, HOUR_MS) == (2_500, 0)
    assert ramped_capture_g(0, 10_000, 5_000, HOUR_MS) == (2_500, 5_000)  # never reaches it
