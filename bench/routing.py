"""Benchmark: carbon-weighted routing latency for 50 candidates, as a function and over HTTP.

1. function: :func:`streams.signals.core.rank` on 50 candidates over 20 zones;
2. HTTP: ``POST /v1/route`` on `llcr signals run` in its own process (as in production;
   a client thread in the server's process would share its GIL), from a keep-alive httpx
   client on 127.0.0.1; each decision is published to a local Tansu broker.

    python bench/routing.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer

from schemas.admin import create_topics
from schemas.codec import Codec
from schemas.settings import KafkaSettings
from streams.embedded.broker import Broker
from streams.signals.core import HOUR_MS, Candidate, Weights, rank

ZONES = [f"Z{i:02d}" for i in range(20)]
NOW = int(time.time() * 1000) // HOUR_MS * HOUR_MS  # the service runs on the wall clock


def percentiles(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p = statistics.quantiles(ms, n=100)
    return f"p50 {p[49]:.3f} ms, p99 {p[98]:.3f} ms, max {ms[-1]:.3f} ms (n={len(ms)})"


def candidates(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {"node": f"n{i}", "zone": rng.choice(ZONES), "latency_ms": rng.uniform(1, 80)}
        for i in range(50)
    ]


def bench_function(requests: int) -> None:
    rng = random.Random(1)
    intensity = {z: rng.uniform(20, 700) for z in ZONES}
    weights = Weights(slo_ms=70)
    times = []
    for _ in range(requests):
        batch = [Candidate(c["node"], c["zone"], c["latency_ms"]) for c in candidates(rng)]
        started = time.perf_counter()
        rank(batch, intensity, weights)
        times.append(time.perf_counter() - started)
    print(f"function  rank(50 candidates): {percentiles(times)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ready(client: httpx.Client, body: dict[str, Any]) -> bool:
    try:
        return client.post("/v1/route", json=body).status_code == 200
    except httpx.TransportError:
        return False


def bench_http(requests: int, tmp: Path) -> None:
    rng = random.Random(2)
    with Broker(log_path=tmp / "broker.log") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix="bench.")
        create_topics(kafka.librdkafka(), kafka.topic_prefix)
        codec, producer = Codec(), Producer(kafka.librdkafka())
        for zone in ZONES:
            for h in range(48):
                hour = NOW - (48 - h) * HOUR_MS
                producer.produce(
                    kafka.topics.name("intensity"),
                    codec.encode(
                        "grid_intensity",
                        {
                            "event_id": f"b:{zone}:{hour}",
                            "zone": zone,
                            "period_start_ms": hour,
                            "period_end_ms": hour + HOUR_MS,
                            "intensity_g_per_kwh": rng.uniform(20, 700),
                            "signal": "average",
                            "variant": "lifecycle",
                            "provider": "bench",
                            "kind": "measured",
                            "estimation_method": None,
                            "revision": 0,
                            "published_at_ms": hour + HOUR_MS,
                        },
                    ),
                    key=zone.encode(),
                )
        producer.flush(30)
        port = free_port()
        env = {
            **os.environ,
            "LLCR_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            "LLCR_API_PORT": str(port),
        }
        code = "import sys; sys.argv[0] = 'llcr'; from schemas.cli import main; main()"
        service = subprocess.Popen(
            [sys.executable, "-c", code, "signals", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                body = {"candidates": candidates(rng), "weights": {"slo_ms": 70}}
                deadline = time.monotonic() + 60
                while not ready(client, body):
                    if time.monotonic() > deadline:
                        raise SystemExit("the signals service never got fresh intensity")
                    time.sleep(0.2)
                for _ in range(200):  # warm-up
                    client.post("/v1/route", json=body)
                times = []
                for _ in range(requests):
                    body = {"candidates": candidates(rng), "weights": {"slo_ms": 70}}
                    started = time.perf_counter()
                    answer = client.post("/v1/route", json=body)
                    times.append(time.perf_counter() - started)
                    assert answer.status_code == 200
            what = "POST /v1/route (50 candidates, decision published)"
            print(f"HTTP      {what}: {percentiles(times)}")
        finally:
            service.terminate()
            service.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    bench_function(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        bench_http(args.requests, Path(tmp))


if __name__ == "__main__":
    main()
