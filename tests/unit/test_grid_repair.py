"""Gaps and glitches in real EIA-930 data (tests/fixtures/grid/README.md): detected,
dead-lettered, filled with flagged conservative estimates, and revised by real data."""

from __future__ import annotations

import csv
import io
import statistics
from datetime import datetime
from pathlib import Path

from agents.grid.feeder import GridFeeder
from agents.grid.files import read_intensity_csv
from agents.grid.repair import RepairPolicy, repair
from agents.grid.revisions import RevisionLog
from agents.grid.validate import zone_is_known
from schemas.units import HOUR_MS

PJM = Path(__file__).parent.parent / "fixtures" / "grid" / "PJM_2022_slices_hourly_genmix_avgci.csv"
ZONE = "US-MIDA-PJM"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def raw_hours() -> dict[int, float | None]:
    """Hour start -> avg_CI straight from the file (None where the row is empty)."""
    with PJM.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {ms(r["timestamp"]): float(r["avg_CI"]) if r["avg_CI"] else None for r in rows}


def as_generic(hours: dict[int, float | None]) -> str:
    """The file as the feeder's generic CSV (a conversion, values untouched)."""
    lines = ["zone,period_start,period_end,value,signal,variant"]
    for start, value in hours.items():
        text = "" if value is None else value
        lines.append(f"{ZONE},{start},{start + HOUR_MS},{text},average,direct")
    return "\n".join(lines) + "\n"


def feeder() -> GridFeeder:
    return GridFeeder([], RevisionLog(), zones=[ZONE], ceiling=2000, known=zone_is_known([ZONE]))


def test_a_real_outage_and_a_real_glitch_are_found_flagged_filled_and_revised() -> None:
    hours = raw_hours()
    assert len(hours) == 168
    observations, unreadable = read_intensity_csv(io.StringIO(as_generic(hours)), "pjm.csv")
    empty = sorted(h for h, v in hours.items() if v is None)
    assert len(unreadable) == len(empty) == 22  # the outage: empty rows, each dead-lettered
    grid = feeder()
    cycle = grid.ingest(observations, rank=0, now_ms=1)

    # the glitch: exactly its five hours are outliers, each with its reason
    glitch = [ms("2022-10-01 05:00+00:00") + i * HOUR_MS for i in range(4)]
    glitch.append(ms("2022-10-02 04:00+00:00"))
    outliers = [p for p in cycle.problems if p.code == "outlier"]
    assert len(outliers) == 5 and all("implausible" in p.reason for p in outliers)
    assert sorted(o.start_ms for o in observations if o.value < 50) == glitch

    # every missing or implausible hour is filled, and only those; the months between the
    # two slices are reported, not filled
    fills = {e["period_start_ms"]: e for e in cycle.events if e["provider"].startswith("fill:")}
    assert sorted(fills) == sorted(empty + glitch)
    assert cycle.filled == 27
    assert any(g.end_ms - g.start_ms > 48 * HOUR_MS for g in cycle.gaps)
    for start, event in fills.items():
        assert event["kind"] == "estimated" and event["provider"] == "fill:csv:pjm.csv"
        assert event["estimation_method"].startswith(
            "llcr_outlier_fill" if start in glitch else "llcr_gap_fill"
        )
    # conservative, computed here from the file alone: the highest of the value before
    # the stretch, after it, a week earlier and the mean of the 24 h before it
    known = {h: v for h, v in hours.items() if v is not None and h not in glitch}
    for start, event in fills.items():
        before = max(h for h in known if h < start)
        after = min(h for h in known if h > start)
        stretch_start = before + HOUR_MS
        recent = [v for h, v in known.items() if 0 <= stretch_start - (h + HOUR_MS) < 24 * HOUR_MS]
        candidates = [known[before], known[after], statistics.fmean(recent)]
        if start - 7 * 24 * HOUR_MS in known:
            candidates.append(known[start - 7 * 24 * HOUR_MS])
        if start in glitch:
            candidates.append(hours[start] or 0.0)
        assert event["intensity_g_per_kwh"] == max(candidates), start
    # the glitched hours are priced near their neighbours (~300), not at ~45 (85 % low)
    assert all(fills[h]["intensity_g_per_kwh"] > 290 for h in glitch)

    # the same file again: nothing new; corrected data for the outage replaces the fills
    # (a revision, measured, from the file's provider), and a fill never replaces it back
    assert grid.ingest(observations, rank=0, now_ms=2).events == []
    corrected = {**hours, **dict.fromkeys(empty, 401.5)}
    fixed, _ = read_intensity_csv(io.StringIO(as_generic(corrected)), "pjm.csv")
    revised = grid.ingest(fixed, rank=0, now_ms=3).events
    assert sorted(e["period_start_ms"] for e in revised) == empty
    assert all(
        (e["revision"], e["kind"], e["provider"], e["intensity_g_per_kwh"])
        == (1, "measured", "csv:pjm.csv", 401.5)
        for e in revised
    )
    assert grid.ingest(observations, rank=0, now_ms=4).events == []


def test_fills_can_be_turned_off_and_a_short_history_judges_nothing() -> None:
    observations, _ = read_intensity_csv(io.StringIO(as_generic(raw_hours())), "pjm.csv")
    off = repair(observations, RepairPolicy(fill=False))
    assert off.fills == [] and len(off.outliers) == 5 and off.gaps
    # without six values of history before it, a value is not judged: the first hours pass
    first = sorted(observations, key=lambda o: o.start_ms)[:6]
    low = [o if i < 5 else type(o)(**{**vars(o), "value": 1.0}) for i, o in enumerate(first)]
    assert repair(low, RepairPolicy()).outliers == []
    # a marginal series is not judged by default (a MOER near 0 under curtailment is real)
    marginal = [type(o)(**{**vars(o), "signal": "marginal"}) for o in observations]
    assert repair(marginal, RepairPolicy()).outliers == []
    assert len(repair(marginal, RepairPolicy(judge_marginal=True)).outliers) == 5
