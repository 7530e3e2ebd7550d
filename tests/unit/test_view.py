"""The live view of `llcr up`: its fold of the pipeline's records, and what it draws."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from schemas.records import EmissionHour, GpuSampleBatch, LiveEmission
from streams.view import LiveView, Removal, removal_of, render, status_line

H = 3_600_000
T0 = 1_672_531_200_000  # 2023-01-01T00:00Z


def batch(host: str, zone: str, ends: list[int], gpu: str = "GPU-1") -> GpuSampleBatch:
    samples: Any = [{"gpu_uuid": gpu, "end_ms": end} for end in ends]
    return {"host": host, "zone": zone, "samples": samples}  # type: ignore[typeddict-item]


def live(host: str, hour: int, mj: int, grams: float | None, as_of: int) -> LiveEmission:
    return {  # type: ignore[typeddict-item]
        "record_id": f"{host}:{hour}",
        "hour_start_ms": hour,
        "host": host,
        "energy_mj": mj,
        "emissions_average_g": grams,
        "as_of_ms": as_of,
    }


def hourly(
    host: str, zone: str, hour: int, kwh: float, grams: float | None, **kw: Any
) -> EmissionHour:
    record: Any = {
        "record_id": kw.get("rid", f"{host}:{hour}"),
        "hour_start_ms": hour,
        "host": host,
        "zone": zone,
        "energy_kwh": kwh,
        "status": kw.get("status", "final"),
        "average": None if grams is None else {"emissions_g": grams},
    }
    return record  # type: ignore[no-any-return]


def test_hosts_rates_and_open_hours() -> None:
    view = LiveView(rate_window_s=5)
    view.on_samples(batch("a", "DE", [T0 + 1000, T0 + 2000]), now_s=100)
    view.on_samples(batch("a", "DE", [T0 + 3000], gpu="GPU-2"), now_s=103)
    view.on_samples(batch("b", "FR", [T0 + 500]), now_s=90)  # outside the rate window
    view.on_live(live("a", T0, 3_600_000_000, 10.0, as_of=T0 + 2000))
    view.on_live(live("a", T0, 1_800_000, 5.0, as_of=T0 + 1000))  # older: ignored
    snap = view.snapshot(now_s=104)
    a, b = snap.hosts
    assert (a.host, a.zone, a.gpus, a.samples, a.newest_ms) == ("a", "DE", 2, 3, T0 + 3000)
    assert a.samples_per_s == 3 / 5 and b.samples_per_s == 0
    assert (a.open_hour_ms, a.open_kwh, a.open_g) == (T0, 1.0, 10.0)
    assert b.open_hour_ms is None and snap.open_hours == 1


def test_a_final_hour_closes_the_open_one_and_revisions_replace_it() -> None:
    view = LiveView()
    view.on_live(live("a", T0, 3_600_000_000, 10.0, as_of=T0 + 2000))
    view.on_hourly(hourly("a", "DE", T0, 1.5, None))
    view.on_live(live("a", T0, 3_600_000_000, 10.0, as_of=T0 + 3000))  # late live: still closed
    view.on_hourly(hourly("b", "FR", T0, 0.5, 4.0))
    snap = view.snapshot(0)
    assert snap.open_hours == 0 and snap.finals == 2
    (row,) = snap.final_hours
    assert (row.zones, row.hosts, row.energy_kwh, row.emissions_g) == ("DE,FR", 2, 2.0, None)
    view.on_hourly(hourly("a", "DE", T0, 1.5, 30.0, status="revised"))
    (row,) = view.snapshot(0).final_hours
    assert (row.energy_kwh, row.emissions_g, row.revised) == (2.0, 34.0, True)


def test_only_the_newest_hours_are_kept() -> None:
    view = LiveView(keep_hours=3)
    for i in range(10):
        view.on_hourly(hourly("a", "DE", T0 + i * H, 1.0, 1.0))
    assert [r.hour_start_ms for r in view.snapshot(0).final_hours] == [
        T0 + 9 * H,
        T0 + 8 * H,
        T0 + 7 * H,
    ]


def test_signals_and_removal_in_the_lines_and_the_tables() -> None:
    view = LiveView()
    signal: Any = {"kind": "eco_mode", "zone": "DE", "mode": "eco", "intensity_g_per_kwh": 120.0}
    view.on_signal(signal)
    view.on_signal({"kind": "routing_decision", "zone": "FR"})  # type: ignore[typeddict-item]
    rows = [
        ("total", 0, 100.0, 60.0, 1.0, 2.0),
        ("hour", T0, 70.0, 60.0, 0, 0),
        ("hour", T0 + H, 30.0, 0.0, 0, 0),
        ("capture", 0, 45.0, 0, 0, 0),
        ("credits", 0, 15.0, 0, 1.0, 0),
        ("estimated", 0, 24.0, 0.02, 1.0, 0),
    ]
    removal = removal_of(rows)
    assert removal == Removal(
        100.0, 60.0, 1, 2, 45.0, 15.0, 1, {T0: (70.0, 60.0), T0 + H: (30.0, 0.0)}, 1, 24.0, 0.02
    )
    assert removal.debt_g == 40.0
    view.on_removal(removal)
    view.on_samples(batch("a", "DE", [T0 + 1000]), now_s=1)
    view.on_hourly(hourly("a", "DE", T0, 1.25, 70.0))
    snap = view.snapshot(1)
    line = status_line(snap)
    assert (
        "1 host(s)" in line and "removed 60 g, debt 40 g" in line and "DE eco (120 g/kWh)" in line
    )
    assert "0.020 kWh unpriced, owed on estimates" in line
    console = Console(record=True, width=160)
    console.print(render(snap))
    text = console.export_text()
    for expected in (
        "a ",
        "2023-01-01 00:00",
        "1.250",
        "70.0",
        "60.0",
        "carbon debt 40 g",
        "1 of 2 scope-hours",
        "owed on estimates: 0.020 kWh unpriced, 24 g",
    ):
        assert expected in text, text
