"""ClickHouse through chDB: the client factory and versioned, idempotent migrations."""

from __future__ import annotations

from typing import Any

import pytest

from streams.settings import ClickHouseSettings
from streams.store.client import connect
from streams.store.migrations import Migration, MigrationError, apply_migrations, bundled_migrations


def test_bundled_migrations_apply_once(clickhouse: Any) -> None:
    versions = [m.version for m in bundled_migrations()]
    assert apply_migrations(clickhouse, "llcr") == versions
    assert apply_migrations(clickhouse, "llcr") == []
    rows = clickhouse.query("SELECT version FROM llcr.schema_migrations FINAL ORDER BY version")
    assert [r[0] for r in rows.result_rows] == versions
    tables = {r[0] for r in clickhouse.query("SHOW TABLES FROM llcr").result_rows}
    assert "dead_letters" in tables


def test_new_migration_is_applied_and_edited_one_is_refused(clickhouse: Any) -> None:
    first = Migration(
        1, "t", "CREATE TABLE IF NOT EXISTS $database.t (a UInt8) ENGINE = MergeTree ORDER BY a;"
    )
    second = Migration(
        2,
        "u",
        "ALTER TABLE $database.t ADD COLUMN IF NOT EXISTS b UInt8;\n"
        "INSERT INTO $database.t VALUES (1, 2);",
    )
    assert apply_migrations(clickhouse, "mig", [first]) == [1]
    assert apply_migrations(clickhouse, "mig", [first, second]) == [2]
    assert clickhouse.query("SELECT a, b FROM mig.t").result_rows == [(1, 2)]
    edited = Migration(1, "t", first.sql + "\n-- edited")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(clickhouse, "mig", [edited, second])


def test_failing_migration_names_itself(clickhouse: Any) -> None:
    with pytest.raises(MigrationError, match="0007_bad"):
        apply_migrations(clickhouse, "mig2", [Migration(7, "bad", "CREATE TABLE nonsense;")])
    assert apply_migrations(clickhouse, "mig2", []) == []


def test_data_survives_reopening_the_directory(clickhouse_settings: ClickHouseSettings) -> None:
    client = connect(clickhouse_settings)
    apply_migrations(client, "llcr")
    client.command(
        "INSERT INTO llcr.dead_letters (dead_letter_id, component, reason_code, reason, value, "
        "failed_at) VALUES ('x', 'test', 'corrupt', 'r', 'v', now64(3))"
    )
    client.close()
    reopened = connect(clickhouse_settings)
    try:
        assert reopened.query("SELECT count() FROM llcr.dead_letters").result_rows == [(1,)]
    finally:
        reopened.close()


def test_sink_mappings_match_the_tables(clickhouse: Any) -> None:
    from streams.sink.rows import TABLES

    apply_migrations(clickhouse, "llcr")
    for mapping in TABLES.values():
        described = clickhouse.query(f"DESCRIBE llcr.{mapping.table}").result_rows
        # what the sink writes: not ingested_at, nor what the store computes itself
        # (gpu_samples.arrival_rank, MATERIALIZED from source_offset)
        columns = [r[0] for r in described if r[0] != "ingested_at" and r[2] != "MATERIALIZED"]
        assert list(mapping.columns) == columns, mapping.table
        if mapping.rejected_table:
            described = clickhouse.query(f"DESCRIBE llcr.{mapping.rejected_table}").result_rows
            columns = [row[0] for row in described if row[0] != "ingested_at"]
            assert columns == list(mapping.rejected_columns)


def test_every_grafana_panel_query_runs(clickhouse: Any) -> None:
    """The provisioned dashboard's SQL runs against the migrated schema (macros stubbed)."""
    import json
    import re
    from pathlib import Path

    apply_migrations(clickhouse, "llcr")
    dashboard = json.loads(
        (Path(__file__).parents[2] / "infra/grafana/dashboards/llcr.json").read_text()
    )
    assert len(dashboard["panels"]) >= 6
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "llcr-clickhouse"
            sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 IS NOT NULL", target["rawSql"])
            clickhouse.query(sql)  # raises on unknown tables, columns or syntax


def test_every_example_query_in_the_analysts_guide_runs(clickhouse: Any) -> None:
    import re
    from pathlib import Path

    apply_migrations(clickhouse, "llcr")
    text = (Path(__file__).parents[2] / "docs/analysts.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    assert len(queries) >= 15
    for sql in queries:
        clickhouse.query(sql)
