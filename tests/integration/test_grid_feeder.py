"""The grid feeder against real HTTP servers (providers' documented formats) and a real
broker: happy paths, revisions, bad credentials, outages, rate limits, fallback, and the
CSV import of the shipped Electricity Maps files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.grid.chain import ProviderChain
from agents.grid.feeder import GridFeeder
from agents.grid.files import EM_DIRECT, EM_LCA, EM_TIME
from agents.grid.http import ApiClient
from agents.grid.providers import LBS_PER_MWH_IN_G_PER_KWH, ElectricityMaps, Neso, Static, WattTime
from agents.grid.revisions import RevisionLog
from agents.grid.run import import_files, poll_forever
from agents.grid.validate import zone_is_known
from agents.settings import GridFeederSettings
from schemas.clock import simulated_clock
from schemas.settings import KafkaSettings
from schemas.topics import Topics, spec
from schemas.units import HOUR_MS
from streams.embedded.broker import free_port
from tests.kafka_read import read_topic
from tests.scripted_http import ScriptedServer, scripted_server

ROOT = Path(__file__).parent.parent.parent
SHIPPED = ROOT / "agents" / "data" / "grid"
NESO_PT24H = json.loads((ROOT / "tests/fixtures/grid/neso_pt24h_2023-03-16.json").read_text())
NOW_MS = 1_672_617_600_000  # 2023-01-02T00:00Z


def _portal_rows(zone: str, hours: int) -> list[dict[str, str]]:
    with (SHIPPED / f"{zone}_2023_hourly.csv").open(encoding="utf-8", newline="") as handle:
        return [row for _, row in zip(range(hours), csv.DictReader(handle), strict=False)]


def em_history(
    zone: str, variant: str, hours: int = 24, change: dict[int, float] | None = None
) -> dict[str, Any]:
    """An Electricity Maps v3 /carbon-intensity/history body built from the shipped data."""
    column = EM_DIRECT if variant == "direct" else EM_LCA
    items = []
    for i, row in enumerate(_portal_rows(zone, hours)):
        moment = datetime.fromisoformat(row[EM_TIME]).replace(tzinfo=UTC)
        items.append(
            {
                "zone": zone,
                "carbonIntensity": (change or {}).get(i, float(row[column])),
                "datetime": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "updatedAt": "2023-01-02T00:10:00.000Z",
                "createdAt": "2023-01-01T00:05:00.000Z",
                "emissionFactorType": variant,
                "isEstimated": False,
                "estimationMethod": None,
            }
        )
    return {"zone": zone, "history": items}


def em_forecast(zone: str, values: list[float]) -> dict[str, Any]:
    return {
        "zone": zone,
        "forecast": [
            {
                "carbonIntensity": v,
                "datetime": datetime.fromtimestamp((NOW_MS + i * HOUR_MS) / 1000, UTC).isoformat(),
            }
            for i, v in enumerate(values)
        ],
        "updatedAt": "2023-01-02T00:00:00.000Z",
    }


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0) as http:
        yield http


def _feeder(chain: ProviderChain, zones: list[str]) -> GridFeeder:
    return GridFeeder([chain], RevisionLog(), zones=zones, ceiling=2000, known=zone_is_known(zones))


def _em(server: ScriptedServer, client: httpx.Client, **kw: Any) -> ElectricityMaps:
    return ElectricityMaps(ApiClient("electricitymaps", client, **kw), "em-token", server.url)


def test_electricitymaps_hours_become_events_and_updated_hours_revisions(
    server: ScriptedServer, client: httpx.Client
) -> None:
    def script(change: dict[int, float] | None = None) -> None:
        server.script(
            "/v3/carbon-intensity/history",
            (200, em_history("DE", "direct", change=change)),
            (200, em_history("DE", "lifecycle")),
        )
        server.script("/v3/carbon-intensity/forecast", (200, em_forecast("DE", [150.0, 160.0])))

    feeder = _feeder(ProviderChain([_em(server, client)]), ["DE"])
    script()
    first = feeder.poll(NOW_MS)
    assert len(first.events) == 24 * 2 + 2 * 2 and first.problems == [] and first.gaps == []
    direct = {
        e["period_start_ms"]: e
        for e in first.events
        if e["variant"] == "direct" and e["kind"] == "measured"
    }
    rows = _portal_rows("DE", 24)
    assert [direct[s]["intensity_g_per_kwh"] for s in sorted(direct)] == [
        float(r[EM_DIRECT]) for r in rows
    ]
    assert {e["provider"] for e in first.events} == {"electricitymaps"}
    calls = server.calls("/v3/carbon-intensity/history")
    assert calls[0].headers["auth-token"] == "em-token"
    assert [c.query["emissionFactorType"] for c in calls] == ["direct", "lifecycle"]

    script(change={5: 999.0})  # the provider corrected hour 5 (direct)
    second = feeder.poll(NOW_MS + 300_000)
    assert [(e["intensity_g_per_kwh"], e["revision"]) for e in second.events] == [(999.0, 1)]
    script(change={5: 999.0})
    assert feeder.poll(NOW_MS + 600_000).events == []  # nothing new: nothing published


def test_watttime_login_token_and_marginal_moer(
    server: ScriptedServer, client: httpx.Client
) -> None:
    meta = {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "units": "lbs_co2_per_mwh",
        "data_point_period_seconds": 300,
        "warnings": [],
        "model": {"date": "2023-03-01"},
    }
    points = [
        {
            "point_time": datetime.fromtimestamp(
                (NOW_MS - 3_600_000 + i * 300_000) / 1000, UTC
            ).isoformat(),
            "value": 800.0 + i,
        }
        for i in range(12)
    ]
    server.script("/login", (200, {"token": "t1"}), (200, {"token": "t2"}))
    server.script(
        "/v3/historical", (401, {"error": "token expired"}), (200, {"data": points, "meta": meta})
    )
    server.script(
        "/v3/forecast",
        (200, {"data": points[:2], "meta": {**meta, "generated_at": "2023-01-02T00:00:00+00:00"}}),
    )
    provider = WattTime(
        ApiClient("watttime", client),
        username="u",
        password="p",
        regions={"US-CAL-CISO": "CAISO_NORTH"},
        base_url=server.url,
    )
    fetched = provider.fetch("US-CAL-CISO", NOW_MS)
    measured = [o for o in fetched.observations if o.kind == "measured"]
    assert len(measured) == 12 and len(fetched.observations) == 14
    assert measured[0].value == pytest.approx(800.0 * LBS_PER_MWH_IN_G_PER_KWH)
    assert (measured[0].signal, measured[0].end_ms - measured[0].start_ms) == ("marginal", 300_000)
    assert server.calls("/login")[0].headers["Authorization"].startswith("Basic ")
    # the first token was refused: one new login, then the data call with the new token
    assert [c.headers["Authorization"] for c in server.calls("/v3/historical")] == [
        "Bearer t1",
        "Bearer t2",
    ]
    assert server.calls("/v3/historical")[-1].query["signal_type"] == "co2_moer"


def test_neso_half_hours_from_a_real_response(server: ScriptedServer, client: httpx.Client) -> None:
    server.script("/intensity/2023-03-16T01:00Z/pt24h", (200, NESO_PT24H))
    server.script("/intensity/2023-03-16T01:00Z/fw24h", (200, {"data": []}))
    fetched = Neso(ApiClient("neso", client), server.url).fetch("GB", 1_678_928_400_000)
    assert len(fetched.observations) == 48 and fetched.problems == []
    first = fetched.observations[0]
    assert (first.value, first.kind, first.end_ms - first.start_ms) == (
        184.0,
        "measured",
        1_800_000,
    )


def test_bad_key_disables_the_provider_with_a_clear_error(
    server: ScriptedServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    server.script("/v3/carbon-intensity/history", (401, {"message": "Invalid auth-token"}))
    chain = ProviderChain([_em(server, client), Static({"DE": 380.0})])
    feeder = _feeder(chain, ["DE"])
    cycle = feeder.poll(NOW_MS)
    assert {e["provider"] for e in cycle.events} == {"static"}
    assert (
        "electricitymaps" in chain.disabled
        and "check the credentials" in chain.disabled["electricitymaps"]
    )
    assert "provider electricitymaps disabled until restart" in caplog.text
    feeder.poll(NOW_MS + HOUR_MS)
    assert len(server.calls("/v3/carbon-intensity/history")) == 1  # never asked again


def test_500s_then_garbage_fall_back_within_the_budget_and_events_name_the_provider(
    server: ScriptedServer, client: httpx.Client
) -> None:
    server.script(
        "/v3/carbon-intensity/history",
        (500, "oops"),
        (502, "oops"),
        (503, "oops"),
        (200, "<html><body>Bad gateway</body></html>"),
    )
    server.script("/intensity/2023-01-02T00:00Z/pt24h", (200, NESO_PT24H))
    server.script("/intensity/2023-01-02T00:00Z/fw24h", (200, {"data": []}))
    clock = [0.0]
    chain = ProviderChain(
        [
            _em(server, client, attempts=3, budget_s=2.0),
            Neso(ApiClient("neso", client), server.url),
        ],
        clock=lambda: clock[0],
    )
    feeder = _feeder(chain, ["GB"])
    started = time.monotonic()
    cycle = feeder.poll(NOW_MS)
    took = time.monotonic() - started
    # the budget bounds the waiting; the slack is for a loaded machine's HTTP round trips
    assert took < 2.0 + 3.0, f"fallback took {took:.1f}s, budget 2s"
    assert len(server.calls("/v3/carbon-intensity/history")) == 3  # three attempts, no more
    assert len(cycle.events) == 48 and {e["provider"] for e in cycle.events} == {"neso"}
    assert feeder.stats.provider_errors == {"electricitymaps": 1}

    feeder.poll(NOW_MS)  # still backing off: not asked (no busy loop)
    assert len(server.calls("/v3/carbon-intensity/history")) == 3
    clock[0] += 31  # the back-off (30 s) is over: asked again, answers garbage
    again = feeder.poll(NOW_MS)
    assert len(server.calls("/v3/carbon-intensity/history")) == 4
    assert feeder.stats.provider_errors == {"electricitymaps": 2}
    assert again.events == []  # NESO answered the same values: nothing new


def test_a_200_with_only_unusable_items_falls_back(
    server: ScriptedServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    unusable = {i: -500.0 for i in range(24)}  # every hour negative: nothing can be priced
    for variant in ("lifecycle", "direct"):
        server.script(
            "/v3/carbon-intensity/history", (200, em_history("DE", variant, change=unusable))
        )
    em = ElectricityMaps(
        ApiClient("electricitymaps", client), "em-token", server.url, forecast=False
    )
    chain = ProviderChain([em, Static({"DE": 380.0})])
    feeder = _feeder(chain, ["DE"])
    cycle = feeder.poll(NOW_MS)
    assert cycle.events and {e["provider"] for e in cycle.events} == {"static"}
    assert feeder.stats.provider_errors == {"electricitymaps": 1}
    assert "no usable intensity for DE (48 item(s), 0 unreadable, none valid)" in caplog.text
    assert chain.fetch("DE", NOW_MS + HOUR_MS).provider == "static"  # EM backs off now


def test_retry_after_is_respected(server: ScriptedServer, client: httpx.Client) -> None:
    server.script(
        "/v3/carbon-intensity/history",
        (429, {"message": "rate limited"}, {"Retry-After": "1"}),
        (200, em_history("DE", "direct", hours=2)),
    )
    provider = ElectricityMaps(
        ApiClient("electricitymaps", client, budget_s=5),
        "k",
        server.url,
        variants=("direct",),
        forecast=False,
    )
    started = time.monotonic()
    fetched = provider.fetch("DE", NOW_MS)
    assert time.monotonic() - started >= 0.9  # waited as asked, then got the data
    assert len(fetched.observations) == 2

    server.script(
        "/v3/carbon-intensity/history", (429, {"message": "slow down"}, {"Retry-After": "120"})
    )
    clock = [0.0]
    chain = ProviderChain([provider, Static({"DE": 380.0})], clock=lambda: clock[0])
    cycle = _feeder(chain, ["DE"]).poll(NOW_MS)
    assert {e["provider"] for e in cycle.events} == {"static"}
    before = len(server.requests)
    clock[0] += 119
    chain.fetch("DE", NOW_MS)
    assert len(server.requests) == before  # not asked again before Retry-After passed


def test_unreachable_provider_is_transient(client: httpx.Client) -> None:
    down = ElectricityMaps(
        ApiClient("electricitymaps", client, attempts=2, budget_s=1),
        "k",
        f"http://127.0.0.1:{free_port()}",
    )
    chain = ProviderChain([down, Static({"DE": 380.0})])
    answer = chain.fetch("DE", NOW_MS)
    assert answer.provider == "static" and answer.errors[0].code == "transient"


def _intensity_events(
    kafka: KafkaSettings, topics: Topics, expected: int, **kw: float
) -> list[dict[str, Any]]:
    partitions = spec("intensity").partitions
    topic = topics.name("intensity")
    return read_topic(
        kafka.bootstrap_servers, topic, "grid_intensity", expected, partitions=partitions, **kw
    )


def _settings(kafka: KafkaSettings, tmp_path: Path, **kw: Any) -> GridFeederSettings:
    return GridFeederSettings(kafka=kafka, state_dir=tmp_path / "grid", **kw)


def test_poll_publishes_to_kafka_with_the_provider_named(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path, server: ScriptedServer
) -> None:
    server.script("/v3/carbon-intensity/history", (503, "down"))
    server.script("/intensity/2023-01-02T00:00Z/pt24h", (200, NESO_PT24H))
    server.script("/intensity/2023-01-02T00:00Z/fw24h", (200, {"data": []}))
    settings = _settings(
        kafka,
        tmp_path,
        zones=["GB"],
        electricitymaps_token="k",
        electricitymaps_url=server.url,
        neso_url=server.url,
        provider_budget_s=1,
        retry_attempts=2,
        average_chain=["electricitymaps", "neso"],
        metrics_port=(port := free_port()),
    )
    feeder = poll_forever(settings, threading.Event(), once=True, clock=lambda: NOW_MS / 1000)
    assert feeder.stats.events == 48
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    assert "llcr_grid_events_total 48.0" in metrics
    assert 'llcr_grid_provider_errors_total{provider="electricitymaps"} 1.0' in metrics
    events = _intensity_events(kafka, topics, 48)
    assert {e["provider"] for e in events} == {"neso"} and len(
        {e["event_id"] for e in events}
    ) == 48


def _llcr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; sys.argv[0] = 'llcr'; from schemas.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=240,
    )


def test_cli_imports_a_portal_file_every_hour_exactly_once(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    env = {
        "LLCR_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "LLCR_STATE_DIR": str(tmp_path),
    }
    path = SHIPPED / "GB_2023_hourly.csv"
    out = _llcr("agent", "grid", "--from-csv", str(path), env=env)
    assert out.returncode == 0, out.stderr
    assert "read 17520 event(s): 17520 delivered to" in out.stderr
    # the file's two real glitches (2 h each, "96-99 % renewable"), both variants: replaced
    assert "rejected 8 input(s); 4 gap(s), 8 period(s) filled with flagged" in out.stderr
    again = _llcr("agent", "grid", "--from-csv", str(path), env=env)  # idempotent
    assert "read 0 event(s): 0 delivered" in again.stderr
    events = _intensity_events(kafka, topics, 17520, timeout_s=60, settle_s=1.0)
    assert len(events) == 17520
    by_key = {(e["period_start_ms"], e["variant"]): e for e in events}
    assert len(by_key) == 17520  # every hour and variant exactly once
    rows = _portal_rows("GB", 8760)
    glitches = {f"2023-{day} {hour}:00:00" for day in ("06-07", "09-28") for hour in ("10", "11")}
    for row in rows:
        start = round(datetime.fromisoformat(row[EM_TIME]).replace(tzinfo=UTC).timestamp() * 1000)
        for variant, column in (("direct", EM_DIRECT), ("lifecycle", EM_LCA)):
            event = by_key[(start, variant)]
            if row[EM_TIME] in glitches:  # an estimate, flagged, never below the glitch
                assert event["provider"] == "fill:csv:GB_2023_hourly.csv", event
                assert event["kind"] == "estimated"
                assert event["intensity_g_per_kwh"] > 5 * float(row[column])
            else:
                assert event["intensity_g_per_kwh"] == float(row[column])
                assert event["provider"] == "csv:GB_2023_hourly.csv"
        assert by_key[(start, "direct")]["period_end_ms"] == start + HOUR_MS
    assert {e["revision"] for e in events} == {0}


def _with_direct(row: str, value: str) -> str:
    cells = row.split(",")
    cells[4] = value  # the direct-intensity column
    return ",".join(cells)


def test_cli_reports_every_bad_row_and_publishes_nothing_bad(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    header, *rows = (SHIPPED / "DE_2023_hourly.csv").read_text(encoding="utf-8").splitlines()[:13]
    bad = [
        *rows[:3],  # hours 0-2: fine
        _with_direct(rows[3], "NaN"),  # hour 3: direct not a number, lifecycle fine
        _with_direct(rows[4], "-12.5"),  # hour 4: direct negative, lifecycle fine
        rows[5],
        _with_direct(rows[5], "333.0"),  # hour 5 again, another direct value
        rows[6],
        rows[6],  # hour 6 again, the same values
        "2023-01-01 12:00:00,Germany",  # unreadable
        *rows[9:12],  # hours 9-11; hours 7 and 8 are missing
    ]
    path = tmp_path / "DE_bad.csv"
    path.write_text("\n".join([header, *bad]) + "\n", encoding="utf-8")
    env = {
        "LLCR_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "LLCR_STATE_DIR": str(tmp_path / "s"),
    }
    out = _llcr("agent", "grid", "--from-csv", str(path), env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    codes = sorted(
        line.split("]")[0].removeprefix("rejected [")
        for line in lines
        if line.startswith("rejected")
    )
    assert codes == [
        "bad_row",
        "conflicting_duplicate",  # hour 5 direct, both values
        "conflicting_duplicate",
        "duplicate",  # hour 5 lifecycle (same value twice)
        "duplicate",  # hour 6 direct
        "duplicate",  # hour 6 lifecycle
        "negative",
        "not_a_number",
    ], out.stderr
    gaps = sorted(line.split(":")[0] for line in lines if line.startswith("gap"))
    # direct: 3-5 rejected and 7-8 missing; lifecycle: 7-8 missing
    assert gaps == ["gap DE average/direct", "gap DE average/direct", "gap DE average/lifecycle"]
    # hours 0-2 both; 3-5 lifecycle only; 6 once; 9-11 both; and the gaps filled with
    # flagged estimates: direct 3-5 and 7-8, lifecycle 7-8
    expected = 6 + 3 + 2 + 6 + 7
    assert f"read {expected} event(s): {expected} delivered to" in out.stderr
    assert "rejected 8 input(s); 3 gap(s), 7 period(s) filled" in out.stderr
    events = _intensity_events(kafka, topics, expected, settle_s=1.0)
    assert len(events) == expected
    fills = [e for e in events if e["provider"] == "fill:csv:DE_bad.csv"]
    assert len(fills) == 7 and {e["kind"] for e in fills} == {"estimated"}
    assert all(0 <= e["intensity_g_per_kwh"] < 2000 for e in events)
    assert 333.0 not in {e["intensity_g_per_kwh"] for e in events}
    letters = read_topic(
        kafka.bootstrap_servers,
        topics.name("dead_letters"),
        "dead_letter",
        8,
        partitions=spec("dead_letters").partitions,
        settle_s=1.0,
    )
    assert sorted(d["reason_code"] for d in letters) == codes
    assert all(d["component"] == "agent.grid" and d["value"] for d in letters)


def test_import_keeps_original_timestamps_and_paces_by_speed(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    path = tmp_path / "gb.csv"
    path.write_text(
        "zone,period_start,period_end,value,signal\n"
        + "".join(
            f"GB,2023-03-15T0{h}:00Z,2023-03-15T0{h}:30Z,{180 + h},average\n" for h in range(4)
        )
    )
    settings = _settings(kafka, tmp_path, fill_gaps=False)  # pacing only: the gaps stay
    started = time.monotonic()
    result = import_files(settings, [path], speed=1800.0, stop=threading.Event())
    took = time.monotonic() - started
    assert result.events == 4 and result.problems == []
    assert result.gaps and all(g.end_ms - g.start_ms == 1_800_000 for g in result.gaps)
    assert took >= 5.5  # 3 h of file time at 1800x: ~6 s; paced, not sent at once
    events = _intensity_events(kafka, topics, 4)
    starts = sorted(e["period_start_ms"] for e in events)
    assert starts[0] == 1_678_838_400_000 and starts[-1] - starts[0] == 3 * HOUR_MS


def test_import_on_a_shared_clock_sends_each_period_when_the_clock_reaches_it(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    """`llcr up` paces the feeder with the agents' clock: periods before the clock's start
    go at once, later ones when the clock reaches their start."""
    path = tmp_path / "gb.csv"
    path.write_text(
        "zone,period_start,period_end,value,signal\n"
        + "".join(
            f"GB,2023-03-15T0{h}:00Z,2023-03-15T0{h}:30Z,{180 + h},average\n" for h in range(4)
        )
    )
    anchor_ms = int(time.time() * 1000) + 1000
    # at the anchor the clock reads 01:00; 1800x: 02:00 and 03:00 follow 2 s and 4 s later
    clock = simulated_clock("2023-03-15T01:00:00Z", 1800.0, anchor_ms)
    started = time.time()
    result = import_files(
        _settings(kafka, tmp_path, fill_gaps=False),
        [path],
        speed=1800.0,
        stop=threading.Event(),
        clock=clock,
    )
    took = time.time() - started
    assert result.events == 4 and result.problems == []
    assert 4.5 <= took <= 8.0, took  # 03:00 at anchor + 4 s (not 6 s, as from the file start)
    events = _intensity_events(kafka, topics, 4)
    assert sorted(e["period_start_ms"] for e in events)[-1] == 1_678_849_200_000  # 03:00
