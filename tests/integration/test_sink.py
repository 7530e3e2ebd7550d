"""The ClickHouse sink against a real broker and chDB: every topic lands once, replays and
restarts change nothing, bad messages become dead letters, queries reach the owner."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from schemas.cli import root
from schemas.codec import CONVERSIONS, Codec
from schemas.settings import KafkaSettings
from schemas.topics import CATALOGUE, TopicKey, Topics
from schemas.units import HOUR_MS
from streams.settings import ClickHouseSettings, SinkSettings
from streams.sink.query import QueryError, endpoint_file, run_query
from streams.sink.rows import TABLES
from tests.examples import EXAMPLES, T0
from tests.sink_run import running_sink, wait_for

# What makes a record of each topic distinct (its table's ORDER BY identity).
_IDENTITY: dict[TopicKey, Callable[[dict[str, Any], int], object]] = {
    "samples": lambda r, i: (r.update(batch_id=f"host-a:{i}"), r["samples"][0].update(seq=i)),
    "intensity": lambda r, i: r.update(
        event_id=f"ev{i}", period_start_ms=T0 + i * HOUR_MS, period_end_ms=T0 + (i + 1) * HOUR_MS
    ),
    "emissions_hourly": lambda r, i: r.update(record_id=f"rec{i}"),
    "emissions_live": lambda r, i: r.update(record_id=f"rec{i}"),
    "capture_commands": lambda r, i: r.update(command_id=f"cmd{i}"),
    "capture_telemetry": lambda r, i: r.update(telemetry_id=f"tel{i}"),
    "removal_orders": lambda r, i: r.update(order_id=f"ord{i}"),
    "ledger": lambda r, i: r.update(seq=i),
    "signals": lambda r, i: r.update(signal_id=f"sig{i}"),
    "dead_letters": lambda r, i: r.update(dead_letter_id=f"dl{i}"),
}
VIEWS = [
    "emissions",
    "emissions_by_job_hourly",
    "emissions_by_job_daily",
    "emissions_by_tenant_hourly",
    "emissions_by_tenant_daily",
    "emissions_by_model_hourly",
    "emissions_by_model_daily",
    "emissions_by_zone_hourly",
    "emissions_by_zone_daily",
    "efficiency_daily",
    "grid_intensity_current",
    "removal_orders_current",
    "dead_letters_daily",
    "obligation_basis_hourly",
    "annual_mean_intensity",
    "hourly_vs_annual_daily",
]


def record(key: TopicKey, i: int) -> dict[str, Any]:
    schema = next(s.schema for s in CATALOGUE if s.key == key)
    r = copy.deepcopy(EXAMPLES[schema])
    _IDENTITY[key](r, i)
    return r


def produce(kafka: KafkaSettings, items: list[tuple[TopicKey, dict[str, Any] | bytes]]) -> None:
    """Every second record of a topic with two formats (samples: v1 batches and v2
    blocks) goes out in its other format, so every sink test reads a mixed topic."""
    codec = Codec()
    producer = Producer(kafka.librdkafka())
    for n, (key, value) in enumerate(items):
        topic = next(s for s in CATALOGUE if s.key == key)
        if isinstance(value, bytes):
            data = value
        elif topic.also_written_as and n % 2:
            other = topic.also_written_as[0]
            data = codec.encode(other, CONVERSIONS[(topic.schema, other)](value))
        else:
            data = codec.encode(topic.schema, value)
        producer.produce(kafka.topics.name(key), data, key=key.encode())
    assert producer.flush(30) == 0


def every_topic(indices: range) -> list[tuple[TopicKey, dict[str, Any] | bytes]]:
    return [(key, record(key, i)) for key in _IDENTITY for i in indices]


def sink_settings(kafka: KafkaSettings, clickhouse: ClickHouseSettings, group: str) -> SinkSettings:
    return SinkSettings(
        kafka=kafka,
        clickhouse=clickhouse,
        group_id=group,
        batch_max_wait_s=0.3,
        max_backoff_s=2.0,
    )


def counts(clickhouse: ClickHouseSettings) -> dict[str, int]:
    tables = sorted({m.table for m in TABLES.values()})
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count() AS n FROM llcr.{t} FINAL" for t in tables)
    return {row[0]: int(row[1]) for row in run_query(clickhouse, sql).rows}


def view_snapshot(clickhouse: ClickHouseSettings) -> dict[str, list[str]]:
    return {
        view: sorted(
            json.dumps(row, sort_keys=True)
            for row in run_query(clickhouse, f"SELECT * FROM llcr.{view}").rows
        )
        for view in VIEWS
    }


def test_every_topic_lands_once_and_replay_changes_nothing(
    topics: Topics, kafka: KafkaSettings, clickhouse_settings: ClickHouseSettings, unique: str
) -> None:
    items = every_topic(range(5))
    items += every_topic(range(3))  # at-least-once upstream: duplicates
    revised = record("emissions_hourly", 0)
    revised.update(status="revised", revision=1, energy_kwh=9.0)
    items.append(("emissions_hourly", revised))
    items.append(("samples", b"\x00not avro"))
    produce(kafka, items)
    settings = sink_settings(kafka, clickhouse_settings, f"sink-{unique}")
    expected = {m.table: 5 for m in TABLES.values()}
    expected["dead_letters"] += 1  # the undecodable message

    with running_sink(settings) as stats:
        wait_for(endpoint_file(clickhouse_settings).exists, what="the sink to own chDB")
        wait_for(lambda: counts(clickhouse_settings) == expected, what=f"counts {expected}")
        # while the sink owns chDB, queries go through its endpoint
        via_endpoint = run_query(clickhouse_settings, "SELECT count() FROM llcr.emissions")
        assert via_endpoint.rows == [[5]]
        with pytest.raises(QueryError, match="readonly"):
            run_query(clickhouse_settings, "DROP TABLE llcr.ledger")
        first = view_snapshot(clickhouse_settings)
    assert stats.dead_letters == 1 and stats.commits >= 1

    rows = run_query(
        clickhouse_settings,
        "SELECT revision, energy_kwh FROM llcr.emissions WHERE record_id = 'rec0'",
    ).rows
    assert rows == [[1, 9.0]]  # the revision replaced revision 0
    dead = run_query(
        clickhouse_settings,
        "SELECT component, reason_code, source_topic FROM llcr.dead_letters FINAL "
        "WHERE component = 'sink'",
    ).rows
    assert dead == [["sink", "undecodable", kafka.topics.name("samples")]]

    # replay everything from the start: every view answers the same
    with running_sink(settings, from_earliest=True) as again:
        wait_for(lambda: again.messages >= len(items), what="the replay")
    assert again.messages == len(items)
    assert counts(clickhouse_settings) == expected
    assert view_snapshot(clickhouse_settings) == first


@contextmanager
def chdb_held_by_another_process(
    clickhouse: ClickHouseSettings, seconds: float
) -> Iterator[subprocess.Popen[str]]:
    """A second process owns the chDB directory for ``seconds`` (the store is unavailable)."""
    code = (
        "import sys, time; from streams.settings import ClickHouseSettings; "
        "from streams.store.client import connect; "
        "c = connect(ClickHouseSettings(dsn=sys.argv[1])); print('held', flush=True); "
        "time.sleep(float(sys.argv[2])); c.close()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, clickhouse.dsn, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.wait(seconds + 60)
        if child.stdout is not None:
            child.stdout.close()


def test_sink_down_and_store_unavailable_loses_nothing(
    topics: Topics, kafka: KafkaSettings, clickhouse_settings: ClickHouseSettings, unique: str
) -> None:
    settings = sink_settings(kafka, clickhouse_settings, f"sink-{unique}")
    produce(kafka, every_topic(range(4)))
    with running_sink(settings):
        wait_for(endpoint_file(clickhouse_settings).exists, what="the sink to own chDB")
        wait_for(lambda: counts(clickhouse_settings)["ledger"] == 4, what="first part")
    # the sink is down and chDB closed; records keep coming
    produce(kafka, every_topic(range(4, 10)))
    with (
        chdb_held_by_another_process(clickhouse_settings, 5) as holder,
        running_sink(settings) as stats,
    ):
        # the sink cannot open the store: it backs off and consumes nothing meanwhile
        time.sleep(2)
        assert stats.messages == 0
        produce(kafka, every_topic(range(10, 12)))
        holder.wait(60)
        wait_for(endpoint_file(clickhouse_settings).exists, what="the sink to own chDB")
        wait_for(
            lambda: set(counts(clickhouse_settings).values()) == {12},
            what="every record once",
        )
    assert counts(clickhouse_settings) == {m.table: 12 for m in TABLES.values()}
    assert stats.messages == 8 * len(_IDENTITY)


def test_query_command_opens_the_store_when_no_sink_runs(
    clickhouse_settings: ClickHouseSettings, clickhouse: Any
) -> None:
    from streams.store.migrations import apply_migrations

    apply_migrations(clickhouse, "llcr")
    clickhouse.close()
    runner = CliRunner()
    dsn = clickhouse_settings.dsn
    result = runner.invoke(
        root, ["query", "--dsn", dsn, "--format", "json", "SELECT count() AS n FROM llcr.ledger"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"n": 0}]
    table = runner.invoke(root, ["query", "--dsn", dsn, "SELECT 1 AS one, 'x' AS s"])
    assert table.output.splitlines() == ["one  s", "---  -", "1    x", "(1 row)"]


def test_samples_outside_the_bounds_land_flagged_apart_and_one_bad_row_costs_log_n(
    topics: Topics, kafka: KafkaSettings, clickhouse_settings: ClickHouseSettings, unique: str
) -> None:
    batch = record("samples", 0)
    good = batch["samples"][0]
    absurd = copy.deepcopy(good)  # 1e13 mJ in a second: 10 GW, whatever limit it claims
    absurd.update(seq=1, energy_mj=10**13, power_limit_w=0.0)
    absurd["jobs"] = [dict(absurd["jobs"][0], energy_mj=10**13, share=1.0)]
    negative = copy.deepcopy(good)
    negative.update(seq=-5)  # once: a UInt64 column refused the whole batch
    batch["samples"] = [good, absurd, negative]
    ledger = [record("ledger", i) for i in range(256)]
    ledger[100]["seq"] = -1  # a row ClickHouse cannot encode, among 255 good ones
    # a forged message repeating the good sample's key with other numbers, after it
    forged_batch = record("samples", 0)
    forged = copy.deepcopy(good)
    forged.update(energy_mj=good["energy_mj"] // 2)
    forged["jobs"] = [dict(good["jobs"][0], energy_mj=forged["energy_mj"], share=1.0)]
    forged_batch.update(batch_id="forged", samples=[forged])
    produce(kafka, [("samples", batch), ("samples", forged_batch)])
    produce(kafka, [("ledger", e) for e in ledger])
    settings = sink_settings(kafka, clickhouse_settings, f"sink-{unique}")

    def stored() -> dict[str, int]:
        sql = (
            "SELECT (SELECT count() FROM llcr.gpu_samples FINAL), "
            "(SELECT count() FROM llcr.gpu_samples_rejected FINAL), "
            "(SELECT count() FROM llcr.ledger FINAL), "
            "(SELECT count() FROM llcr.dead_letters FINAL WHERE reason_code = 'insert_rejected')"
        )
        row = run_query(clickhouse_settings, sql).rows[0]
        return dict(zip(("samples", "rejected", "ledger", "dead"), row, strict=True))

    with running_sink(settings) as stats:
        wait_for(endpoint_file(clickhouse_settings).exists, what="the sink to own chDB")
        want = {"samples": 1, "rejected": 2, "ledger": 255, "dead": 1}
        wait_for(lambda: stored() == want, what=f"rows {want}")
    assert stats.rejected_rows == 2
    assert stats.inserts <= 2 * 8 + 2, stats.inserts  # bisection: ~2 log2(256), not 256
    rejected = run_query(
        clickhouse_settings,
        "SELECT seq, reason_code FROM llcr.gpu_samples_rejected FINAL ORDER BY reason_code",
    ).rows
    assert rejected == [[1, "absurd_power"], [-5, "out_of_range"]]
    # analysts never sum the refused energy, and the first message of a sample is the one
    # kept: the forged repeat replaced nothing
    for table in ("gpu_samples FINAL", "gpu_samples_accepted"):
        total = run_query(
            clickhouse_settings, f"SELECT sum(energy_mj), any(batch_id) FROM llcr.{table}"
        ).rows
        assert total == [[good["energy_mj"], batch["batch_id"]]], (table, total)
