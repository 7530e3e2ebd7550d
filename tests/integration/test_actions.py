"""The removal service end to end on a real broker: a day of real German intensity, a sim
capture unit, the sim credit provider (with faults), the ledger verified from ClickHouse."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from schemas.cli import root
from schemas.clock import simulated_clock
from schemas.codec import Codec
from schemas.settings import KafkaSettings
from schemas.topics import Topics
from schemas.units import HOUR_MS
from streams.removal.capture_sim import run_capture_sim
from streams.removal.checkpoint import read_head, write_head
from streams.removal.core import Book, Policy
from streams.removal.ledger import Head
from streams.removal.provider import CreditProvider
from streams.removal.provider_sim import Faults, SimProvider
from streams.removal.service import Actions, LedgerBrokenError
from streams.settings import ActionsSettings, CaptureUnitConfig, ClickHouseSettings, SinkSettings
from streams.sink.query import endpoint_file, run_query
from streams.topic_reader import read_to_end
from streams.view import REMOVAL_SQL, removal_of, removal_text
from tests.examples import EXAMPLES
from tests.sink_run import running_sink, wait_for
from tests.unit.test_removal_core import chain_of

DAY = "2023-03-10"
UNIT = CaptureUnitConfig(
    unit_id="de-capture-1",
    capacity_kg_per_h=10,
    thermal_kwh_per_t=2000,
    electric_kwh_per_t=2700,  # net removal only below 1e6 / 2700 = 370.4 g/kWh
    recoverable_heat_fraction=0.6,
    min_net_g=1,
    ramp_kg_per_h_per_h=100,
)
TENANT_KWH = {"acme": 25.0, "globex": 15.0}


def day_of_intensity() -> list[tuple[int, float]]:
    """(hour start ms, lifecycle gCO2e/kWh) of one real day in Germany (shipped file)."""
    folder = resources.files("agents") / "data" / "grid"
    with (folder / "DE_2023_hourly.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.reader(handle) if r[0].startswith(DAY)]
    return [
        (int(datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() * 1000), float(r[5]))
        for r in rows
    ]


def hour_record(hour: int, tenant: str, intensity: float, **changes: Any) -> dict[str, Any]:
    r: dict[str, Any] = copy.deepcopy(EXAMPLES["emissions_hourly"])
    energy = changes.pop("energy_kwh", None) or TENANT_KWH[tenant]
    r.update(
        record_id=hashlib.sha256(f"{hour}{tenant}".encode()).hexdigest()[:32],
        hour_start_ms=hour,
        site="de-site",
        zone="DE",
        tenant=tenant,
        job_id=f"{tenant}-train",
        energy_kwh=energy,
        energy_mj=round(energy * 3.6e9),
        **changes,
    )
    r["average"].update(
        emissions_g=energy * intensity,
        intensity_g_per_kwh=intensity,
        variant="lifecycle",
        intensity_event_ids=[f"electricitymaps:DE:average:lifecycle:{hour}:0"],
    )
    return r


class Publisher:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka, self.codec = kafka, Codec()
        self.producer = Producer(kafka.librdkafka())

    def send(self, topic: str, schema: Any, record: dict[str, Any] | bytes) -> None:
        data = record if isinstance(record, bytes) else self.codec.encode(schema, record)
        self.producer.produce(self.kafka.topics.name(topic), data, key=b"k")
        assert self.producer.flush(30) == 0


def read(kafka: KafkaSettings, topic: Any, schema: Any, partitions: int) -> list[dict[str, Any]]:
    codec = Codec()
    messages = read_to_end(kafka.librdkafka(), kafka.topics.name(topic), partitions)
    return [codec.decode(schema, m.value()) for m in messages]


@contextmanager
def threads(*targets: Callable[[threading.Event], None]) -> Iterator[threading.Event]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(target: Callable[[threading.Event], None]) -> None:
        try:
            target(stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    running = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in running:
        thread.start()
    try:
        yield stop
    finally:
        stop.set()
        for thread in running:
            thread.join(60)
        assert not any(t.is_alive() for t in running)
        if errors:
            raise errors[0]


def folded(kafka: KafkaSettings) -> tuple[Book, list[dict[str, Any]]]:
    entries = read(kafka, "ledger", "ledger_entry", 1)
    book = Book(Policy())
    for entry in entries:
        book.apply(entry)
    return book, entries


def send_hour(
    out: Publisher, intensity: list[tuple[int, float]], hour: int, g_per_kwh: float
) -> None:
    """The day's records of one hour, with a late price, a never-priced tenant, a
    revision and bad input in the hours the test looks at."""
    for tenant in TENANT_KWH:
        record = hour_record(hour, tenant, g_per_kwh)
        if (hour, tenant) == (intensity[6][0], "acme"):  # its price comes late
            unpriced = copy.deepcopy(record)
            unpriced["average"] = None
            out.send("emissions_hourly", "emissions_hourly", unpriced)
            record.update(status="revised", revision=1)
        out.send("emissions_hourly", "emissions_hourly", record)
    if hour == intensity[6][0]:  # a tenant whose energy is never priced: owed
        never = hour_record(hour, "hooli", g_per_kwh, energy_kwh=2.0)
        never["average"] = None
        out.send("emissions_hourly", "emissions_hourly", never)
    if hour == intensity[3][0]:  # a revision: acme used more energy that hour
        revised = hour_record(
            hour, "acme", g_per_kwh, energy_kwh=26.0, status="revised", revision=1
        )
        out.send("emissions_hourly", "emissions_hourly", revised)
    if hour == intensity[5][0]:  # bad input: settled never
        bad = hour_record(hour, "initech", g_per_kwh, energy_kwh=1.0)
        bad["average"]["emissions_g"] = -40.0
        out.send("emissions_hourly", "emissions_hourly", bad)
        stray: dict[str, Any] = copy.deepcopy(EXAMPLES["capture_telemetry"])
        stray.update(site="de-site", unit_id=UNIT.unit_id, command_id="cap-unknown")
        out.send("capture_telemetry", "capture_telemetry", stray)


def test_a_day_of_real_intensity_is_removed_to_the_gram_and_the_ledger_proves_it(
    topics: Topics,
    kafka: KafkaSettings,
    unique: str,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    intensity = day_of_intensity()
    assert len(intensity) == 24
    speed = 1200.0  # an hour every 3 s
    seconds = simulated_clock(f"{DAY}T00:00:00Z", speed)

    def clock() -> int:
        return int(seconds() * 1000)

    with SimProvider(clock_ms=clock) as sim:
        settings = ActionsSettings(
            kafka=kafka,
            group_id=f"actions-{unique}",
            capture_units={"de-site": UNIT},
            provider_url=sim.url,
            plan_quiet_s=0.3,
            tick_s=0.2,
            poll_every_s=0.2,
            latency_target_h=6,
            order_lead_h=1,
            min_lot_g=5000,
            capture_window_h=2,
            ledger_head=tmp_path / "ledger-head.json",
        )
        provider = CreditProvider(sim.url, timeout_s=2)
        actions = Actions(settings, provider=provider, clock_ms=clock)
        out = Publisher(kafka)
        with threads(actions.run, lambda stop: run_capture_sim(settings, stop, clock)):
            for hour, g_per_kwh in intensity:
                while clock() < hour + HOUR_MS + 60_000:
                    time.sleep(0.05)
                send_hour(out, intensity, hour, g_per_kwh)

            def covered() -> bool:
                book, _ = folded(kafka)
                hours = [a for a in book.hours.values() if a.obligation_mg]
                return len(hours) == 49 and all(a.remaining_mg == 0 for a in hours)

            wait_for(covered, timeout_s=120, what="every hour covered")
        provider.close()

    book, entries = folded(kafka)
    # 1. obligations: the latest revision of every record x 1.1, to the milligram
    expected: dict[tuple[str, int], int] = {}
    for hour, g_per_kwh in intensity:
        for tenant, kwh in TENANT_KWH.items():
            used = 26.0 if (hour, tenant) == (intensity[3][0], "acme") else kwh
            expected[(f"tenant:{tenant}", hour)] = round(used * g_per_kwh * 1.1 * 1000)
    # priced or owed: 2 kWh no intensity priced are owed at 1,200 g/kWh, never 0 g
    expected[("tenant:hooli", intensity[6][0])] = round(2.0 * 1200 * 1.1 * 1000)
    from_records: dict[tuple[str, int], int] = defaultdict(int)
    parasitic: dict[tuple[str, int], int] = defaultdict(int)
    for e in entries:
        if e["kind"] in ("emission_hour", "emission_revision"):
            source = json.loads(e["payload_json"]).get("source")
            bucket = parasitic if source == "capture_parasitic" else from_records
            bucket[(e["scope"], e["hour_start_ms"])] += round(e["quantity_g"] * 1000)
    assert dict(from_records) == expected
    for key, extra in parasitic.items():  # capture that emitted more than it captured
        expected[key] += extra
    obligations = {k: a.obligation_mg for k, a in book.hours.items()}
    assert obligations == expected
    allocated: dict[tuple[str, int], int] = defaultdict(int)
    for e in entries:
        if e["kind"] == "allocation":
            allocated[(e["scope"], e["hour_start_ms"])] += round(e["quantity_g"] * 1000)
    assert dict(allocated) == expected  # covered exactly, by capture plus retired credits
    removed = sum(
        round(e["quantity_g"] * 1000)
        for e in entries
        if e["kind"] in ("capture_delivery", "credit_retirement")
    )
    assert removed >= sum(expected.values())
    assert {e["kind"] for e in entries} == {
        "emission_hour",
        "emission_revision",
        "capture_delivery",
        "credit_retirement",
        "allocation",
    }

    # 2. capture ran exactly in the hours where its net removal was positive
    commands = read(kafka, "capture_commands", "capture_command", 4)
    running = {c["hour_start_ms"] for c in commands if c["action"] != "stop"}
    assert running == {h for h, g in intensity if g < 1e6 / UNIT.electric_kwh_per_t}
    assert all(
        c["expected_capture_g"] > c["expected_parasitic_g"]
        for c in commands
        if c["action"] != "stop"
    )
    telemetry = read(kafka, "capture_telemetry", "capture_telemetry", 4)
    last = max(c["issued_at_ms"] for c in commands)  # its hour may not be over yet
    assert {t["command_id"] for t in telemetry} >= {
        c["command_id"] for c in commands if c["issued_at_ms"] < last
    }

    # 3. orders: each bought once, each retired
    orders = read(kafka, "removal_orders", "removal_order", 4)
    final = {o["order_id"]: o for o in sorted(orders, key=lambda o: o["version"])}
    assert final and all(o["status"] == "retired" for o in final.values())
    assert len(sim.orders) == len(final)
    assert all(len(o["serial_numbers"]) >= 1 and o["retired_at_ms"] for o in final.values())

    # 4. bad input was dead-lettered with its reason, not settled
    dead = read(kafka, "dead_letters", "dead_letter", 4)
    assert {d["reason_code"] for d in dead if d["component"] == "actions"} == {
        "negative_obligation",
        "unknown_command",
    }
    assert ("tenant:initech", intensity[5][0]) not in book.hours

    # 5. the ledger verifies from ClickHouse; editing any row names that row
    sink = SinkSettings(kafka=kafka, clickhouse=clickhouse_settings, group_id=f"sink-{unique}")
    with running_sink(sink):
        wait_for(endpoint_file(clickhouse_settings).exists, what="the sink to own chDB")
        wait_for(
            lambda: (
                run_query(clickhouse_settings, "SELECT count() FROM llcr.ledger").rows
                == [[len(entries)]]
            ),
            what="the ledger in ClickHouse",
        )
    debt = run_query(
        clickhouse_settings,
        "SELECT count(), max(abs(debt_g)), sum(obligation_g) FROM llcr.carbon_debt_hourly",
    ).rows[0]
    assert debt[0] == 49 and debt[1] < 0.0005
    assert abs(debt[2] - sum(expected.values()) / 1000) < 0.01
    # what is owed on an estimate says so: the late price replaced acme's, hooli's stays
    basis = run_query(
        clickhouse_settings,
        "SELECT scope, hour_start, round(estimated_g, 6), unpriced_kwh, priced_g "
        "FROM llcr.obligation_basis_hourly WHERE estimated_g > 0 OR unpriced_kwh > 0",
    ).rows
    assert [[s, round(e, 3), k, p] for s, _, e, k, p in basis] == [
        ["tenant:hooli", 2400.0, 2.0, 0.0]
    ], basis
    line = removal_text(removal_of(run_query(clickhouse_settings, REMOVAL_SQL).rows))
    assert "49 of 49 scope-hours covered; 1 scope-hour(s) owed on estimates: 2.000 kWh" in line
    latency = run_query(
        clickhouse_settings,
        "SELECT countIf(covered_at IS NULL), min(latency_h), max(latency_h) "
        "FROM llcr.removal_latency",
    ).rows[0]
    assert latency[0] == 0 and 0 <= latency[1] <= latency[2] <= 6
    score = run_query(
        clickhouse_settings, "SELECT min(score), max(score) FROM llcr.matching_score_daily"
    ).rows[0]
    assert 0 < score[0] <= score[1] <= 1
    runner = CliRunner()
    dsn = ["--dsn", clickhouse_settings.dsn]
    head = ["--head", str(settings.ledger_head)]
    ok = runner.invoke(root, ["ledger", "verify", *dsn, *head])
    assert ok.exit_code == 0, ok.output
    assert f"{len(entries)} entries, chain intact, ends at its head checkpoint" in ok.output
    # the report draws the run (no grid-intensity events were published in this test)
    page, image = tmp_path / "report.html", tmp_path / "report.png"
    drawn = runner.invoke(root, ["report", *dsn, "--out", str(page), "--png", str(image)])
    assert drawn.exit_code == 0, drawn.output
    text = page.read_text()
    assert text.count("<svg") == 4 and "No data yet" in text and "Matching score" in text
    assert "Hourly matching vs the annual average" in text
    assert "1 scope-hour(s) owed on estimates: 2.000 kWh unpriced, 2,400 g" in text
    assert image.read_bytes().startswith(b"\x89PNG")
    target = len(entries) // 2
    from streams.store.client import connect

    client = connect(clickhouse_settings)
    client.command(
        f"ALTER TABLE llcr.ledger UPDATE quantity_g = quantity_g + 1 WHERE seq = {target} "
        "SETTINGS mutations_sync = 1"
    )
    client.close()
    broken = runner.invoke(root, ["ledger", "verify", *dsn, *head])
    assert broken.exit_code == 1
    assert f"BROKEN at seq {target}" in broken.output and "edited" in broken.output


def test_a_provider_failing_half_its_calls_never_buys_twice(
    topics: Topics, kafka: KafkaSettings, unique: str, tmp_path: Path
) -> None:
    faults = Faults(fail_rate=0.25, timeout_rate=0.25, late_s=0.6, seed=7)
    with SimProvider(faults=faults) as sim:
        settings = ActionsSettings(
            kafka=kafka,
            group_id=f"actions-{unique}",
            provider_url=sim.url,
            provider_timeout_s=0.3,
            tick_s=0.1,
            poll_every_s=0.1,
            min_lot_g=1,
            latency_target_h=1,
            order_lead_h=1,  # every residual is due at once: an order per round and scope
            ledger_head=tmp_path / "ledger-head.json",
        )
        out = Publisher(kafka)
        base = day_of_intensity()

        def phase(rounds: range) -> None:
            provider = CreditProvider(sim.url, timeout_s=settings.provider_timeout_s)
            actions = Actions(settings, provider=provider)
            with threads(actions.run):
                for i in rounds:
                    hour, g = base[i]
                    for tenant in TENANT_KWH:
                        out.send(
                            "emissions_hourly", "emissions_hourly", hour_record(hour, tenant, g)
                        )
                    time.sleep(1.0)
            provider.close()

        phase(range(4))  # stopped with orders in flight; the next instance resumes them
        phase(range(4, 8))

        def settled() -> bool:
            orders = read(kafka, "removal_orders", "removal_order", 4)
            latest = {o["order_id"]: o for o in sorted(orders, key=lambda o: o["version"])}
            return bool(latest) and all(
                o["status"] in ("retired", "failed") for o in latest.values()
            )

        provider = CreditProvider(sim.url, timeout_s=settings.provider_timeout_s)
        with threads(Actions(settings, provider=provider).run):
            wait_for(settled, timeout_s=90, what="every order retired or failed")
        provider.close()

    orders = read(kafka, "removal_orders", "removal_order", 4)
    latest = {o["order_id"]: o for o in sorted(orders, key=lambda o: o["version"])}
    keys = {o["idempotency_key"] for o in latest.values()}
    assert set(sim.orders) == keys  # one provider order per key: nothing bought twice
    assert len({o.reference for o in sim.orders.values()}) == len(sim.orders)
    assert all(
        o["status"] == "retired" or (o["status"] == "failed" and o["reason"])
        for o in latest.values()
    )
    assert sim.calls.get("fail", 0) > 0 and any("late" in k for k in sim.calls)
    book, _ = folded(kafka)
    retired = sum(o["quantity_g"] for o in latest.values() if o["status"] == "retired")
    assert all(a.remaining_mg == 0 for a in book.hours.values())
    assert retired * 1000 >= sum(a.obligation_mg for a in book.hours.values())


def test_a_ledger_topic_that_lost_its_tail_is_refused_not_forked(
    topics: Topics, kafka: KafkaSettings, unique: str, tmp_path: Path
) -> None:
    entries = chain_of(5)
    out = Publisher(kafka)
    for entry in entries[:3]:
        out.send("ledger", "ledger_entry", entry)
    path = tmp_path / "ledger-head.json"
    settings = ActionsSettings(kafka=kafka, group_id=f"actions-{unique}", ledger_head=path)

    def recover() -> None:
        provider = CreditProvider("http://127.0.0.1:9", timeout_s=1)
        try:
            Actions(settings, provider=provider).recover()
        finally:
            provider.close()

    # the head says seq 4: the topic (a broker that lost data, a re-created topic) ends
    # at 2, and appending at 3 would fork the ledger
    write_head(path, Head(entries[4]["chain_id"], 4, entries[4]["hash"]))
    with pytest.raises(LedgerBrokenError, match=r"entries 3\.\.4 are missing"):
        recover()
    assert read_head(path) == Head(entries[4]["chain_id"], 4, entries[4]["hash"])  # kept
    # a head behind the topic: entries published just before a stop; recovered, and the
    # head checkpointed again at the topic's end
    write_head(path, Head(entries[1]["chain_id"], 1, entries[1]["hash"]))
    recover()
    assert read_head(path) == Head(entries[2]["chain_id"], 2, entries[2]["hash"])
    # a head naming another entry at its seq: the topic's tail was rewritten
    write_head(path, Head(entries[2]["chain_id"], 2, "f" * 64))
    with pytest.raises(LedgerBrokenError, match="the tail was rewritten"):
        recover()
