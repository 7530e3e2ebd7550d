"""The grid feeder's pure core: file parsing, validation, revisions, Retry-After."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.grid.files import IntensityFileError, parse_utc_offset, read_intensity_csv
from agents.grid.http import retry_after_seconds
from agents.grid.model import Observation
from agents.grid.repair import RepairPolicy, repair
from agents.grid.revisions import RevisionLog
from agents.grid.validate import check, zone_is_known
from schemas.units import HOUR_MS

T0 = 1_672_531_200_000  # 2023-01-01T00:00Z
PORTAL_HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
    "Data Source,Data Estimated,Data Estimation Method\n"
)


def obs(value: float, start_h: int = 0, **kw: object) -> Observation:
    fields: dict[str, object] = {
        "zone": "DE",
        "start_ms": T0 + start_h * HOUR_MS,
        "end_ms": T0 + (start_h + 1) * HOUR_MS,
        "value": value,
        "signal": "average",
        "variant": "direct",
        "provider": "electricitymaps",
        "kind": "measured",
    }
    fields.update(kw)
    return Observation(**fields)  # type: ignore[arg-type]


def test_portal_rows_become_direct_and_lifecycle_hours() -> None:
    text = PORTAL_HEADER + (
        "2023-01-01 00:00:00,Germany,Germany,DE,140.51,185.8,83.79,78.42,entsoe.eu,false,\n"
        "2023-01-01 01:00:00,Germany,Germany,DE,140.44,185.7,83.85,78.93,entsoe.eu,true,TSA\n"
    )
    observations, problems = read_intensity_csv(io.StringIO(text), "DE_2023_hourly.csv")
    assert problems == []
    assert [
        (o.start_ms, o.end_ms, o.variant, o.value, o.kind, o.estimation_method)
        for o in observations
    ] == [
        (T0, T0 + HOUR_MS, "direct", 140.51, "measured", None),
        (T0, T0 + HOUR_MS, "lifecycle", 185.8, "measured", None),
        (T0 + HOUR_MS, T0 + 2 * HOUR_MS, "direct", 140.44, "estimated", "TSA"),
        (T0 + HOUR_MS, T0 + 2 * HOUR_MS, "lifecycle", 185.7, "estimated", "TSA"),
    ]
    assert {o.provider for o in observations} == {"csv:DE_2023_hourly.csv"}


def test_generic_rows_and_unreadable_rows_name_their_line() -> None:
    text = (
        "zone,period_start,period_end,value,signal,variant\n"
        "GB,2023-03-15T01:00Z,2023-03-15T01:30Z,184,average,direct\n"
        "GB,1678842000000,1678843800000,183,marginal,\n"
        "GB,2023-03-15T02:00Z,2023-03-15T02:30Z,,average,direct\n"
        "GB,yesterday,2023-03-15T03:00Z,100,average,direct\n"
        "GB,2023-03-15T03:00Z,2023-03-15T03:30Z,100,mean,direct\n"
    )
    observations, problems = read_intensity_csv(io.StringIO(text), "mine.csv")
    assert [(o.value, o.signal, o.variant) for o in observations] == [
        (184.0, "average", "direct"),
        (183.0, "marginal", "direct"),
    ]
    assert observations[1].start_ms == 1678842000000
    assert [p.reason.split(":")[0] for p in problems] == [
        "mine.csv line 4",
        "mine.csv line 5",
        "mine.csv line 6",
    ]
    assert "empty value" in problems[0].reason and "'mean'" in problems[2].reason


def test_a_file_of_another_kind_is_refused_whole() -> None:
    with pytest.raises(ValueError, match="not an Electricity Maps portal export"):
        read_intensity_csv(io.StringIO("a,b\n1,2\n"), "x.csv")


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (obs(-1.0), "negative"),
        (obs(math.nan), "not_a_number"),
        (obs(math.inf), "not_a_number"),
        (obs(2000.5), "above_ceiling"),
        (obs(100.0, end_ms=T0), "empty_period"),
        (obs(100.0, zone="XX-NOWHERE"), "unknown_zone"),
    ],
)
def test_bad_values_are_rejected_with_their_reason(bad: Observation, code: str) -> None:
    checked = check([obs(100.0, 5), bad], ceiling=2000, known=zone_is_known(["DE"]))
    assert [p.code for p in checked.problems] == [code]
    assert [o.value for o in checked.good] == [100.0]


def test_conflicting_overlaps_reject_all_members_and_exact_duplicates_pass_once() -> None:
    checked = check(
        [
            obs(100.0, 0),
            obs(100.0, 0),  # exact duplicate: published once, reported
            obs(200.0, 1),
            obs(250.0, 1),  # conflicting: neither is published
            obs(300.0, 2, end_ms=T0 + 4 * HOUR_MS),
            obs(310.0, 3),  # overlaps the two-hour period above with another value
            obs(400.0, 7),
        ],
        ceiling=2000,
        known=zone_is_known(None),
    )
    assert [(o.start_ms - T0) // HOUR_MS for o in checked.good] == [0, 7]
    assert sorted(p.code for p in checked.problems) == [
        "conflicting_duplicate",
        "conflicting_duplicate",
        "conflicting_duplicate",
        "conflicting_duplicate",
        "duplicate",
    ]
    gaps = repair(checked.good, RepairPolicy()).gaps
    assert [((g.start_ms - T0) // HOUR_MS, (g.end_ms - T0) // HOUR_MS) for g in gaps] == [(1, 7)]


def test_series_are_validated_separately() -> None:
    checked = check(
        [obs(100.0, 0), obs(150.0, 0, variant="lifecycle"), obs(90.0, 0, signal="marginal")],
        ceiling=2000,
        known=zone_is_known(None),
    )
    assert len(checked.good) == 3 and checked.problems == []
    assert repair(checked.good, RepairPolicy()).gaps == []


def test_revisions_count_changes_and_ignore_repeats() -> None:
    log = RevisionLog()
    first = log.observe(obs(100.0), rank=0, published_at_ms=1)
    assert first is not None and first["revision"] == 0
    assert first["event_id"] == f"electricitymaps:DE:average:direct:{T0}:0"
    assert log.observe(obs(100.0), rank=0, published_at_ms=2) is None  # idempotent
    changed = log.observe(obs(104.0), rank=0, published_at_ms=3)
    assert changed is not None and changed["revision"] == 1
    assert changed["intensity_g_per_kwh"] == 104.0
    firmed = log.observe(obs(104.0, kind="estimated"), rank=0, published_at_ms=4)
    assert firmed is not None and firmed["revision"] == 2


def test_a_fallback_never_overrides_a_trusted_value_but_is_replaced_by_one() -> None:
    log = RevisionLog()
    fallback = log.observe(obs(300.0, provider="static"), rank=3, published_at_ms=1)
    assert fallback is not None and fallback["revision"] == 0
    trusted = log.observe(obs(120.0), rank=0, published_at_ms=2)
    assert trusted is not None and (trusted["revision"], trusted["provider"]) == (
        1,
        "electricitymaps",
    )
    assert log.observe(obs(300.0, provider="static"), rank=3, published_at_ms=3) is None


def test_revision_log_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "revisions.json"
    log = RevisionLog()
    log.observe(obs(100.0), rank=0, published_at_ms=1)
    log.observe(obs(101.0, 1), rank=0, published_at_ms=1)
    log.save(path)
    again = RevisionLog.load(path)
    assert again.observe(obs(100.0), rank=0, published_at_ms=2) is None
    event = again.observe(obs(102.0, 1), rank=0, published_at_ms=2)
    assert event is not None and event["revision"] == 1
    again.forget_before(T0 + HOUR_MS)
    assert len(again) == 1


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Sun, 22 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_naive_times_are_refused_unless_the_offset_is_named() -> None:
    text = (
        "zone,period_start,period_end,value,signal,variant\n"
        "US-CAL-CISO,2023-07-01T10:00:00-07:00,1688234400000,250,average,direct\n"
        "US-CAL-CISO,2023-07-01 11:00,2023-07-01 12:00,240,average,direct\n"
    )
    with pytest.raises(IntensityFileError, match=r"mine.csv line 3: naive time '2023-07-01 11:00'"):
        read_intensity_csv(io.StringIO(text), "mine.csv")
    observations, problems = read_intensity_csv(
        io.StringIO(text), "mine.csv", parse_utc_offset("-07:00")
    )
    assert problems == []
    # 10:00 at -07:00 is 17:00 UTC; the naive 11:00 local is 18:00 UTC, not 11:00
    assert [o.start_ms for o in observations] == [1688230800000, 1688230800000 + 3_600_000]
    assert parse_utc_offset("+05:30") == 330 and parse_utc_offset("-60") == -60
    for bad in ("+25:00", "noon"):
        with pytest.raises(IntensityFileError):
            parse_utc_offset(bad)


def test_a_file_naming_a_watttime_region_or_an_eia_code_prices_its_zone() -> None:
    text = (
        "zone,period_start,period_end,value,signal,variant\n"
        "CAISO_NORTH,2023-07-01T10:00Z,2023-07-01T11:00Z,250,average,direct\n"
        "PJM,2023-07-01T10:00Z,2023-07-01T11:00Z,350,average,direct\n"
        "Atlantis,2023-07-01T10:00Z,2023-07-01T11:00Z,350,average,direct\n"
    )
    observations, problems = read_intensity_csv(io.StringIO(text), "regions.csv")
    assert problems == []
    assert [o.zone for o in observations] == ["US-CAL-CISO", "US-MIDA-PJM", "Atlantis"]
    checked = check(observations, ceiling=2000, known=zone_is_known(None))
    assert [o.zone for o in checked.good] == ["US-CAL-CISO", "US-MIDA-PJM"]
    assert [p.code for p in checked.problems] == ["unknown_zone"]  # still refused by name
