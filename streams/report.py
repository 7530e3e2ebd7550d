"""`llcr report`: one self-contained HTML page (and optionally a PNG) of what a run did.

Panels: hourly emissions vs removals, carbon debt over time, the removal-latency
distribution, top jobs by emissions, and grid intensity by zone, with headline numbers.
Every figure is drawn by matplotlib from the ClickHouse views through `llcr query`'s path
(the running sink's endpoint, or the store directly), so it works during `up` and after.
"""

from __future__ import annotations

import html
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from streams.settings import ClickHouseSettings
from streams.sink.query import run_query

Query = Callable[[str], list[list[Any]]]


@dataclass(frozen=True)
class Panel:
    title: str
    caption: str
    draw: Callable[[Any, Query], bool]  # False: no data yet


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _emissions_vs_removals(ax: Any, q: Query) -> bool:
    emitted = q(
        "SELECT toString(hour_start), sum(emissions_g) FROM llcr.emissions_by_zone_hourly "
        "GROUP BY hour_start ORDER BY hour_start"
    )
    if not emitted:
        return False
    removed = dict(
        (str(h), float(r or 0))
        for h, r in q(
            "SELECT toString(hour_start), sum(removed_g) FROM llcr.carbon_debt_hourly "
            "GROUP BY hour_start"
        )
    )
    hours = [_time(h) for h, _ in emitted]
    ax.plot(hours, [float(g or 0) for _, g in emitted], label="emissions (gCO2e)", color="#c0392b")
    ax.plot(
        hours,
        [removed.get(h, 0.0) for h, _ in emitted],
        label="removal allocated (g, incl. buffer)",
        color="#27ae60",
    )
    ax.set_ylabel("g per hour")
    ax.legend(loc="upper left")
    return True


def _debt_over_time(ax: Any, q: Query) -> bool:
    rows = q(
        "SELECT toString(recorded_at), scope, debt_g FROM llcr.carbon_debt_timeline ORDER BY seq"
    )
    if not rows:
        return False
    latest: dict[str, float] = {}
    times, totals = [], []
    for at, scope, debt in rows:
        latest[scope] = float(debt)
        times.append(_time(at))
        totals.append(sum(latest.values()))
    ax.step(times, totals, where="post", color="#8e44ad")
    ax.set_ylabel("outstanding g")
    return True


def _latency(ax: Any, q: Query) -> bool:
    rows = q("SELECT latency_h FROM llcr.removal_latency WHERE latency_h IS NOT NULL")
    if not rows:
        return False
    ax.hist([float(r[0]) for r in rows], bins=24, color="#2980b9")
    ax.set_xlabel("hours from hour end to full coverage")
    ax.set_ylabel("scope-hours")
    return True


def _top_jobs(ax: Any, q: Query) -> bool:
    rows = q(
        "SELECT concat(tenant, ' / ', job_id), sum(emissions_g) AS g "
        "FROM llcr.emissions_by_job_daily GROUP BY tenant, job_id ORDER BY g DESC LIMIT 10"
    )
    if not rows:
        return False
    rows = list(reversed(rows))
    ax.barh([str(r[0])[:40] for r in rows], [float(r[1] or 0) for r in rows], color="#d35400")
    ax.set_xlabel("gCO2e")
    return True


def _intensity(ax: Any, q: Query) -> bool:
    rows = q(
        "SELECT zone, toString(period_start), avg(intensity_g_per_kwh) "
        "FROM llcr.grid_intensity_current WHERE signal = 'average' "
        "AND variant = (SELECT any(variant_average) FROM llcr.emissions) "
        "GROUP BY zone, period_start ORDER BY zone, period_start"
    ) or q(
        "SELECT zone, toString(period_start), avg(intensity_g_per_kwh) "
        "FROM llcr.grid_intensity_current WHERE signal = 'average' "
        "GROUP BY zone, period_start ORDER BY zone, period_start"
    )
    if not rows:
        return False
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for zone, at, value in rows:
        series[str(zone)].append((_time(at), float(value)))
    for zone, points in sorted(series.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], label=zone)
    ax.set_ylabel("gCO2e/kWh")
    ax.legend(loc="upper left")
    return True


PANELS = (
    Panel("Hourly emissions vs removals", "Per emission hour, all scopes.", _emissions_vs_removals),
    Panel(
        "Carbon debt over time",
        "Obligation not yet covered, after each ledger entry.",
        _debt_over_time,
    ),
    Panel("Removal latency", "Hour end to the allocation that completed coverage.", _latency),
    Panel("Top jobs by emissions", "Average signal, all days.", _top_jobs),
    Panel("Grid intensity by zone", "Newest revision of each period (average signal).", _intensity),
)


ComparisonKey = Literal["job", "tenant", "zone"]
_COMPARISON_KEYS: dict[str, tuple[str, ...]] = {
    "job": ("zone", "tenant", "job_id"),
    "tenant": ("zone", "tenant"),
    "zone": ("zone",),
}


def comparison_sql(by: ComparisonKey, since: str | None = None, until: str | None = None) -> str:
    """SQL of hourly matching against the annual average (view ``hourly_vs_annual_daily``),
    grouped ``by`` job, tenant or zone over [since, until] (ISO days), largest gap first."""
    keys = ", ".join(_COMPARISON_KEYS[by])
    where = []
    for bound, op in ((since, ">="), (until, "<=")):
        if bound is not None:
            day = date.fromisoformat(bound)  # ValueError on anything but a day: no SQL text
            where.append(f"day {op} toDate('{day.isoformat()}')")
    return (
        f"SELECT {keys}, variant, round(kwh, 3) AS priced_kwh, round(hourly, 1) AS hourly_g, "
        "round(annual, 1) AS annual_average_g, round(annual - hourly, 1) AS difference_g, "
        "round(100 * (annual - hourly) / nullIf(hourly, 0), 1) AS difference_pct "
        f"FROM (SELECT {keys}, any(variant) AS variant, sum(priced_kwh) AS kwh, "
        "sum(hourly_g) AS hourly, sum(annual_g) AS annual FROM llcr.hourly_vs_annual_daily "
        f"{'WHERE ' + ' AND '.join(where) if where else ''} GROUP BY {keys}) "
        "ORDER BY abs(annual - hourly) DESC"
    )


def comparison_section(q: Query) -> str:
    """What hourly matching changes: per zone and tenant, the grams hour by hour against
    the zone's annual mean over the same energy (the method most tools use)."""
    title = "Hourly matching vs the annual average"
    caption = (
        "Per zone and tenant: emissions matched hour by hour against the zone's annual "
        "mean intensity times the same priced energy. A positive difference: the annual "
        "average overstates."
    )
    rows = q(comparison_sql("tenant") + " LIMIT 20")
    if not rows:
        body = "<p class='empty'>No data yet.</p>"
    else:
        head = ("zone", "tenant", "variant", "kWh", "hourly g", "annual-average g", "Δ g", "Δ %")
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        body = (
            "<table class='compare'><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + f"</tr>{cells}</table>"
        )
    return f"<section><h2>{title}</h2><p class='caption'>{caption}</p>{body}</section>"


def headline(q: Query) -> list[tuple[str, str]]:
    e = q(
        "SELECT round(sum(energy_kwh), 3), round(sum(emissions_average_g)), count(), "
        "countIf(emissions_average_g IS NULL) FROM llcr.emissions"
    )[0]
    d = q(
        "SELECT round(sum(obligation_g)), round(sum(removed_g)), round(sum(debt_g)) "
        "FROM llcr.carbon_debt_hourly"
    )[0]
    lat = q(
        "SELECT round(quantile(0.5)(latency_h), 2), round(max(latency_h), 2) "
        "FROM llcr.removal_latency"
    )[0]
    score = q(
        "SELECT round(sum(within_target_g) / nullIf(sum(obligation_g), 0), 4) "
        "FROM llcr.matching_score_daily"
    )[0]
    owed = q(
        "SELECT countIf(estimated_g > 0), sum(unpriced_kwh), sum(estimated_g) "
        "FROM llcr.obligation_basis_hourly"
    )[0]
    basis = (
        f"{owed[0]} scope-hour(s) owed on estimates: {float(owed[1] or 0):,.3f} kWh unpriced, "
        f"{float(owed[2] or 0):,.0f} g at the conservative rate until priced"
        if owed[0]
        else "every kWh priced"
    )
    return [
        ("GPU energy", f"{e[0]} kWh in {e[2]} GPU-job-hours ({e[3]} not yet priced)"),
        ("Emissions", f"{e[1]} gCO2e"),
        ("Removal obligation", f"{d[0]} g (emissions + buffer)"),
        ("Removed and allocated", f"{d[1]} g; outstanding debt {d[2]} g"),
        ("Removal latency", f"median {lat[0]} h, max {lat[1]} h"),
        ("Matching score", f"{score[0]} of the obligation covered within the target"),
        ("Priced or owed", basis),
    ]


def build(query: Query) -> tuple[str, bytes]:
    """(HTML page with inline SVG figures, PNG of all panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = []
    grid, axes = plt.subplots(len(PANELS), 1, figsize=(11, 4 * len(PANELS)))
    for panel, grid_ax in zip(PANELS, axes, strict=True):
        figure, ax = plt.subplots(figsize=(11, 4))
        has_data = panel.draw(ax, query)
        if has_data:
            panel.draw(grid_ax, query)
        else:
            grid_ax.text(0.5, 0.5, "no data yet", ha="center")
        grid_ax.set_title(panel.title)
        if has_data:
            figure.autofmt_xdate()
            svg = io.StringIO()
            figure.savefig(svg, format="svg", bbox_inches="tight")
            body = svg.getvalue()
            body = body[body.index("<svg") :]
        else:
            body = "<p class='empty'>No data yet.</p>"
        plt.close(figure)
        sections.append(
            f"<section><h2>{html.escape(panel.title)}</h2>"
            f"<p class='caption'>{html.escape(panel.caption)}</p>{body}</section>"
        )
    grid.tight_layout()
    png = io.BytesIO()
    grid.savefig(png, format="png", dpi=90)
    plt.close(grid)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in headline(query)
    )
    sections.append(comparison_section(query))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>llcr report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "th{text-align:left;padding-right:2em}.caption,.empty{color:#666}</style></head><body>"
        f"<h1>llcr: GPU energy, emissions and removal</h1><table>{rows}</table>"
        + "".join(sections)
        + "</body></html>"
    )
    return page, png.getvalue()


def write_report(settings: ClickHouseSettings, out: Path, png: Path | None) -> None:
    def query(sql: str) -> list[list[Any]]:
        return run_query(settings, sql).rows

    page, image = build(query)
    if out.suffix.lower() == ".png":
        out.write_bytes(image)
    else:
        out.write_text(page, encoding="utf-8")
    if png is not None:
        png.write_bytes(image)
