"""The signals service's folding without Kafka or HTTP: intensity events in, the signals it
publishes out (its ``publish`` seam collects them here; the Kafka shell is
streams/signals/run.py, tested in tests/integration/test_signals.py)."""

from __future__ import annotations

import json
from typing import Any

from schemas.records import CarbonSignal, GridIntensityEvent
from schemas.units import HOUR_MS
from streams.settings import SignalsSettings
from streams.signals.service import Signals

T0 = 1_672_531_200_000  # 2023-01-01T00:00Z


def event(hour: int, value: float, **changes: Any) -> GridIntensityEvent:
    base: dict[str, Any] = {
        "event_id": f"e{hour}{changes}",
        "zone": "DE",
        "signal": "average",
        "variant": "lifecycle",
        "kind": "measured",
        "provider": "test",
        "estimation_method": None,
        "intensity_g_per_kwh": value,
        "period_start_ms": T0 + hour * HOUR_MS,
        "period_end_ms": T0 + (hour + 1) * HOUR_MS,
        "published_at_ms": T0 + (hour + 1) * HOUR_MS,
        "revision": 0,
    }
    base.update(changes)
    return base  # type: ignore[return-value]


def folded(events: list[GridIntensityEvent], now_h: int = 30) -> tuple[Signals, list[Any]]:
    out: list[CarbonSignal] = []
    signals = Signals(
        SignalsSettings(min_history_h=24, min_dwell_h=0),
        clock_ms=lambda: T0 + now_h * HOUR_MS,
        publish=out.append,
    )
    for e in events:
        signals.on_intensity(e)
    return signals, out


def test_each_new_hour_moves_the_tier_once_and_a_dirty_hour_turns_eco_on() -> None:
    history = [event(h, 300.0 + (h % 5)) for h in range(24)]
    signals, out = folded([*history, event(24, 900.0)], now_h=25)
    eco = [s for s in out if s["kind"] == "eco_mode"]
    assert len(eco) == 25  # one decision per hour, in order
    assert [s["valid_from_ms"] for s in eco] == [T0 + h * HOUR_MS for h in range(25)]
    assert eco[-1]["mode"] == "eco" and signals.eco("DE")["mode"] == "eco"


def test_a_revision_only_counts_when_it_is_newer_and_other_variants_are_ignored() -> None:
    _, out = folded([event(0, 300.0, revision=1), event(0, 999.0, revision=0)])
    assert len([s for s in out if s["kind"] == "eco_mode"]) == 1
    _, direct = folded([event(0, 300.0, variant="direct")])
    assert direct == []  # the service prices the lifecycle variant
    _, sub_hourly = folded([event(0, 300.0, period_end_ms=T0 + 5 * 60_000)])
    assert sub_hourly == []


def test_both_signals_of_an_hour_give_a_context_with_their_ratio() -> None:
    _, out = folded([event(3, 400.0), event(3, 600.0, signal="marginal", event_id="m")])
    [context] = [s for s in out if s["kind"] == "intensity_context"]
    assert context["signal_id"] == f"context:DE:{T0 + 3 * HOUR_MS}"
    assert json.loads(context["payload_json"])["marginal_over_average"] == 1.5


def test_a_zone_gone_quiet_is_published_unknown_once() -> None:
    signals, out = folded([event(0, 300.0)], now_h=10)  # stale after 3 h
    signals.check_stale()
    signals.check_stale()
    unknown = [s for s in out if s["kind"] == "eco_mode" and s["mode"] == "unknown"]
    assert len(unknown) == 1
