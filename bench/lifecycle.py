"""What the matching core costs per host as retained hours grow (pure, in process).

Builds one host (``--gpus`` GPUs, 2 jobs each, one sample per GPU per minute) over
``--hours`` hours, closes them, then times:
- ``ingest`` per sample of a further hour (a batch's work);
- ``tick`` per host when nothing changed (the timer's steady state), with intensity for
  every hour in the book.

    PYTHONPATH=. python bench/lifecycle.py --hours 72 --gpus 8
"""

from __future__ import annotations

import argparse
import time

from schemas.records import GpuSample
from streams.matching.core import HOUR_MS, Factors, IntensityBook
from streams.matching.lifecycle import HostState, Policy, ingest, tick

T0 = 1_672_531_200_000  # 2023-01-01T00:00Z
MINUTE = 60_000


def sample(gpu: int, seq: int, start: int) -> GpuSample:
    return {
        "gpu_uuid": f"GPU-{gpu}",
        "gpu_index": gpu,
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "mig_instance": None,
        "seq": seq,
        "start_ms": start,
        "end_ms": start + MINUTE,
        "energy_mj": 42_000_000,
        "energy_method": "counter",
        "flags": [],
        "power_w": 700.0,
        "power_limit_w": 700.0,
        "utilization_pct": 90.0,
        "memory_used_bytes": 0,
        "temperature_c": 60.0,
        "jobs": [
            {
                "job_id": job,
                "tenant": "acme",
                "model": None,
                "share": 0.5,
                "energy_mj": 21_000_000,
                "sharing": "time_sliced",
                "prompt_tokens": 0,
                "generation_tokens": 0,
            }
            for job in ("train", "serve")
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=int, default=72)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    policy = Policy(grace_ms=MINUTE, retention_ms=(args.hours + 2) * HOUR_MS)
    book = IntensityBook()
    for hour in range(args.hours + 2):
        for variant in ("lifecycle", "direct"):
            book.apply(
                {
                    "event_id": f"bench:{hour}:{variant}",
                    "zone": "DE",
                    "period_start_ms": T0 + hour * HOUR_MS,
                    "period_end_ms": T0 + (hour + 1) * HOUR_MS,
                    "intensity_g_per_kwh": 300.0 + hour,
                    "signal": "average",
                    "variant": variant,  # type: ignore[typeddict-item]
                    "provider": "bench",
                    "kind": "measured",
                    "estimation_method": None,
                    "revision": 0,
                    "published_at_ms": T0,
                }
            )
    state = HostState("host-0", partition=0)
    seq = 0
    for minute in range(args.hours * 60):
        for gpu in range(args.gpus):
            ingest(state, "DE", "fra", sample(gpu, seq, T0 + minute * MINUTE))
        seq += 1
    now = T0 + args.hours * HOUR_MS + 2 * MINUTE
    state.last_seen_ms = now
    tick(state, book, Factors(), now, policy)  # closes every hour
    keys = sum(len(g.hours) for g in state.gpus.values())

    started = time.perf_counter()
    count = 0
    for minute in range(60):  # one more hour: what batches do
        for gpu in range(args.gpus):
            ingest(state, "DE", "fra", sample(gpu, seq, now + minute * MINUTE))
            count += 1
        seq += 1
    ingest_us = (time.perf_counter() - started) / count * 1e6

    now += HOUR_MS
    state.last_seen_ms = now
    tick(state, book, Factors(), now, policy)  # closes that hour too
    started = time.perf_counter()
    for i in range(args.ticks):
        out = tick(state, book, Factors(), now + 1000 * (i + 1), policy)
        assert not out.hourly and not out.live
    tick_ms = (time.perf_counter() - started) / args.ticks * 1000
    print(
        f"{args.hours} h retained, {args.gpus} GPUs x 2 jobs: {keys:,} keys; "
        f"ingest {ingest_us:.1f} us/sample; tick {tick_ms:.2f} ms per host with nothing to do"
    )


if __name__ == "__main__":
    main()
