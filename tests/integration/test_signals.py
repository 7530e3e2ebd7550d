"""The signals service on a real broker with its HTTP API on 127.0.0.1: eco modes from real
intensity, routing decisions logged for audit, follow-the-sun, and clear errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from schemas.codec import Codec
from schemas.settings import KafkaSettings
from schemas.topics import Topics
from schemas.units import HOUR_MS
from streams.settings import SignalsSettings
from streams.signals.core import FlexibleJob, brute_force_window
from streams.signals.run import run_signals
from streams.topic_reader import read_to_end
from tests.sink_run import wait_for
from tests.unit.test_signals_core import shipped

END = int(datetime(2023, 4, 1, tzinfo=UTC).timestamp() * 1000)
START = END - (31 + 14) * 24 * HOUR_MS


def event(zone: str, hour: int, value: float, signal: str = "average") -> dict[str, Any]:
    return {
        "event_id": f"test:{zone}:{signal}:{hour}:0",
        "zone": zone,
        "period_start_ms": hour,
        "period_end_ms": hour + HOUR_MS,
        "intensity_g_per_kwh": value,
        "signal": signal,
        "variant": "lifecycle" if signal == "average" else "direct",
        "provider": "electricitymaps",
        "kind": "measured",
        "estimation_method": None,
        "revision": 0,
        "published_at_ms": hour + HOUR_MS,
    }


@pytest.fixture
def api(topics: Topics, kafka: KafkaSettings, unique: str) -> Iterator[httpx.Client]:
    codec = Codec()
    producer = Producer(kafka.librdkafka())
    for zone in ("DE", "FR"):
        for hour, value in sorted(shipped(zone).items()):
            if START <= hour < END:
                data = codec.encode("grid_intensity", event(zone, hour, value))
                producer.produce(kafka.topics.name("intensity"), data, key=zone.encode())
    for hour in (END - 2 * HOUR_MS, END - HOUR_MS):  # a marginal signal for context
        data = codec.encode("grid_intensity", event("DE", hour, 650.0, "marginal"))
        producer.produce(kafka.topics.name("intensity"), data, key=b"DE")
    assert producer.flush(30) == 0
    settings = SignalsSettings(kafka=kafka, group_id=f"signals-{unique}", api_port=0)
    stop = threading.Event()
    now = END + 30 * 60_000  # half an hour after the last measured hour ended
    urls: list[str] = []
    thread = threading.Thread(
        target=run_signals, args=(settings, stop, lambda: now), kwargs={"on_ready": urls.append}
    )
    thread.start()
    try:
        wait_for(lambda: bool(urls), what="the API")
        with httpx.Client(base_url=urls[0], timeout=5) as client:

            def ready() -> bool:
                answers = [client.get(f"/v1/eco/{zone}") for zone in ("DE", "FR")]
                return all(
                    a.status_code == 200 and a.json().get("at_ms") == END - HOUR_MS for a in answers
                )

            wait_for(ready, what="the month to be consumed")
            yield client
    finally:
        stop.set()
        thread.join(30)


def signals_on_topic(kafka: KafkaSettings) -> list[dict[str, Any]]:
    codec = Codec()
    messages = read_to_end(kafka.librdkafka(), kafka.topics.name("signals"), 4)
    return [codec.decode("carbon_signal", m.value()) for m in messages]


def test_eco_mode_context_and_its_reasons(api: httpx.Client, kafka: KafkaSettings) -> None:
    de = api.get("/v1/eco/DE").json()
    assert de["mode"] in ("eco", "normal") and "percentile" in de["reason"]
    wait_for(
        lambda: any(s["kind"] == "intensity_context" for s in signals_on_topic(kafka)),
        what="an intensity context signal",
    )
    published = signals_on_topic(kafka)
    eco = [s for s in published if s["kind"] == "eco_mode" and s["zone"] == "DE"]
    assert len(eco) == 45 * 24  # one per hour, with its reason
    assert {s["mode"] for s in eco} == {"unknown", "eco", "normal"}
    context = next(s for s in published if s["kind"] == "intensity_context")
    assert context["zone"] == "DE" and "marginal 650" in context["reason"]
    assert api.get("/v1/eco/XX").status_code == 404


def test_routing_ranks_logs_the_decision_and_refuses_bad_requests(
    api: httpx.Client, kafka: KafkaSettings
) -> None:
    request = {
        "candidates": [
            {"node": "fra-1", "zone": "DE", "latency_ms": 8},
            {"node": "par-1", "zone": "FR", "latency_ms": 18},
        ],
        "weights": {"latency": 0.3, "carbon": 0.7, "slo_ms": 50},
        "energy_kwh": 0.002,
    }
    answer = api.post("/v1/route", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["chosen"]["node"] == "par-1"  # French nuclear beats 10 ms here
    assert body["baseline"]["node"] == "fra-1" and body["expected_saved_g"] > 0
    assert [r["node"] for r in body["ranked"]] == ["par-1", "fra-1"]
    wait_for(
        lambda: any(
            s["signal_id"] == f"route:{body['decision_id']}" for s in signals_on_topic(kafka)
        ),
        what="the routing decision on the signals topic",
    )
    assert api.post("/v1/route", json={"candidates": []}).status_code == 422
    unknown = api.post(
        "/v1/route", json={"candidates": [{"node": "x", "zone": "XX", "latency_ms": 1}]}
    )
    assert unknown.status_code == 422 and "XX" in unknown.json()["error"]
    assert api.post("/v1/route", content=b"{not json").status_code == 400
    assert api.get("/v1/nothing").status_code == 404
    # hostile requests get a 4xx, never a 500 (issue 23)
    zero_ref = {**request, "weights": {"latency_ref_ms": 0}}
    refused = api.post("/v1/route", json=zero_ref)
    assert refused.status_code == 422 and "latency_ref_ms" in refused.json()["error"]
    not_finite = api.post("/v1/route", content=b'{"candidates": [], "weights": {"carbon": NaN}}')
    assert not_finite.status_code == 422
    nested = api.post("/v1/route", content=b"[" * 100_000)
    assert nested.status_code == 400 and "nested" in nested.json()["error"]
    assert api.post("/v1/route", json=request).status_code == 200  # still serving


def test_follow_the_sun_answers_what_brute_force_finds(api: httpx.Client) -> None:
    earliest = END - 10 * 24 * HOUR_MS
    request = {
        "energy_kwh": 50.0,
        "duration_h": 5,
        "earliest_start": datetime.fromtimestamp(earliest / 1000, UTC).isoformat(),
        "deadline": datetime.fromtimestamp((END + 3 * 24 * HOUR_MS) / 1000, UTC).isoformat(),
        "zones": ["DE", "FR"],
        "home_zone": "DE",
    }
    answer = api.post("/v1/follow-the-sun", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # the service fills hours after the last measurement from a week earlier: so does this
    series = {z: shipped(z) for z in ("DE", "FR")}
    for hours in series.values():
        for hour in range(END, END + 3 * 24 * HOUR_MS, HOUR_MS):
            hours[hour] = hours[hour - 7 * 24 * HOUR_MS]
        for hour in [h for h in hours if h >= END + 3 * 24 * HOUR_MS or h < START]:
            del hours[hour]
    job = FlexibleJob(50.0, 5, earliest, END + 3 * 24 * HOUR_MS, ("DE", "FR"), "DE")
    best = brute_force_window(job, series)
    assert best is not None
    assert body["zone"] == best.zone
    assert body["start"] == datetime.fromtimestamp(best.start_ms / 1000, UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert body["expected_g"] == pytest.approx(best.emissions_g)
    assert body["basis"] == {"DE": "history", "FR": "history"}
    past = {**request, "deadline": "2023-01-01T00:00:00Z"}
    refused = api.post("/v1/follow-the-sun", json=past)
    assert refused.status_code == 422 and "past" in refused.json()["error"]
    # work a request may ask for is bounded before it touches the shared state: a
    # 2,000-zone x 7-year request once held the state lock 13 s
    many = {**request, "zones": [f"Z{i}" for i in range(2000)], "deadline": "2030-01-01"}
    for huge, needle in (
        (many, "2000 zones: at most 64"),
        ({**many, "zones": ["DE"]}, "h a request"),
    ):
        refused = api.post("/v1/follow-the-sun", json=huge)
        assert refused.status_code == 422 and needle in refused.json()["error"], refused.text
    route = {"candidates": [{"node": f"n{i}", "zone": "DE", "latency_ms": 5} for i in range(1001)]}
    refused = api.post("/v1/route", json=route)
    assert refused.status_code == 422 and "at most 1000" in refused.json()["error"], refused.text
