"""What hourly matching changes, on CAISO 2023 (the shipped Electricity Maps file): a
day job and a night job priced hour by hour against the zone's annual mean, through the
real views in chDB and the installed `llcr compare`, against a calculation made here from
the file alone."""

from __future__ import annotations

import copy
import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agents.cli import bundled_grid_files
from agents.grid.files import read_intensity_csv
from agents.grid.revisions import RevisionLog
from streams.settings import ClickHouseSettings
from streams.sink.rows import TABLES
from streams.store.client import connect
from streams.store.migrations import apply_migrations
from tests.examples import EXAMPLES
from tests.integration.test_cli_exit_codes import llcr

ZONE = "US-CAL-CISO"
LOCAL = ZoneInfo("America/Los_Angeles")
HOUR_MS = 3_600_000
JOBS = {"solar-noon": range(10, 16), "night-batch": range(0, 6)}  # local hours


def caiso() -> Path:
    return next(p for p in bundled_grid_files() if p.name.startswith(ZONE))


def lifecycle_by_hour() -> dict[int, float]:
    """Hour start (epoch ms) -> LCA intensity, read with csv here, not with llcr."""
    with caiso().open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for r in rows:
        start = datetime.fromisoformat(r["Datetime (UTC)"]).replace(tzinfo=UTC)
        out[int(start.timestamp() * 1000)] = float(r["Carbon Intensity gCO₂eq/kWh (LCA)"])
    return out


def job_hours(local_hours: range) -> list[int]:
    """Every hour of 2023 whose local (Pacific) start is in ``local_hours``."""
    start = datetime(2023, 1, 1, tzinfo=UTC)
    hours = [start + timedelta(hours=i) for i in range(8760)]
    return [int(h.timestamp() * 1000) for h in hours if h.astimezone(LOCAL).hour in local_hours]


def record(job: str, hour: int, intensity: float) -> dict[str, Any]:
    r: dict[str, Any] = copy.deepcopy(EXAMPLES["emissions_hourly"])
    r.update(
        record_id=f"{job}:{hour}",
        hour_start_ms=hour,
        zone=ZONE,
        site="ca-site",
        tenant="acme",
        job_id=job,
        energy_kwh=1.0,
        energy_mj=3_600_000_000,
    )
    r["average"].update(
        emissions_g=intensity,
        intensity_g_per_kwh=intensity,
        priced_fraction=1.0,
        variant="lifecycle",
        providers=[f"csv:{caiso().name}"],
    )
    return r


def insert(client: Any, key: str, records: list[dict[str, Any]]) -> None:
    table = TABLES[key]  # type: ignore[index]
    rows = [row for r in records for row in table.rows(r)]
    client.insert(f"llcr.{table.table}", rows, column_names=list(table.columns))


def test_hourly_matching_against_the_annual_average_on_caiso_2023(tmp_path: Path) -> None:
    settings = ClickHouseSettings(dsn=f"chdb:{tmp_path / 'store'}")
    client = connect(settings)
    try:
        apply_migrations(client, settings.database)
        with caiso().open(encoding="utf-8-sig", newline="") as lines:
            observations, _ = read_intensity_csv(lines, caiso().name)
        log = RevisionLog()
        events = [e for o in observations if (e := log.observe(o, rank=0, published_at_ms=1))]
        insert(client, "intensity", events)
        intensity = lifecycle_by_hour()
        insert(
            client,
            "emissions_hourly",
            [record(job, h, intensity[h]) for job, local in JOBS.items() for h in job_hours(local)],
        )
    finally:
        client.close()  # the command opens the store next

    # independently: the annual mean is the plain mean of the 8,760 hourly values
    annual = sum(intensity.values()) / len(intensity)
    expected = {}
    for job, local in JOBS.items():
        hours = job_hours(local)
        hourly_g = sum(intensity[h] for h in hours)
        expected[job] = (len(hours), hourly_g, 100 * (len(hours) * annual - hourly_g) / hourly_g)

    done = llcr("compare", "--by", "job", "--format", "json", "--dsn", settings.dsn)
    assert done.returncode == 0, done.stderr
    got = {row["job_id"]: row for row in json.loads(done.stdout)}
    assert set(got) == set(JOBS)
    for job, (kwh, hourly_g, pct) in expected.items():
        row = got[job]
        assert row["zone"] == ZONE and row["variant"] == "lifecycle"
        assert row["priced_kwh"] == kwh
        assert row["hourly_g"] == pytest.approx(hourly_g, abs=0.1)
        assert row["annual_average_g"] == pytest.approx(kwh * annual, abs=0.1)
        assert row["difference_pct"] == pytest.approx(pct, abs=0.1)
    # the point of hourly matching: an annual mean overstates the solar-noon job and
    # understates the night job, by tens of percent in CAISO
    assert got["solar-noon"]["difference_pct"] > 25
    assert got["night-batch"]["difference_pct"] < -10
    # the view's annual mean is the file's
    mean = llcr(
        "query",
        "--format",
        "json",
        "--dsn",
        settings.dsn,
        f"SELECT mean_g_per_kwh, hours FROM llcr.annual_mean_intensity "
        f"WHERE zone = '{ZONE}' AND variant = 'lifecycle' AND year = 2023",
    )
    assert json.loads(mean.stdout) == [{"mean_g_per_kwh": pytest.approx(annual), "hours": 8760}]
    bad = llcr("compare", "--since", "yesterday", "--dsn", settings.dsn)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
