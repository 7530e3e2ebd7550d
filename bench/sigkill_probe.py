"""Diagnostic for crash safety (docs/matching.md, "Crash and rebalance safety").

Kills a busy worker as soon as it has emitted a few hourly records, restarts it, and
prints which (hour, host) finals are missing against the reference. Run from the repo root:

    PYTHONPATH=. python bench/sigkill_probe.py
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from schemas.admin import create_topics
from schemas.settings import KafkaSettings
from schemas.topics import Topics
from streams.embedded.broker import Broker
from tests.integration import test_matching_worker as t
from tests.reference_matching import reference


def by_host_hour(records: list[dict[str, Any]]) -> list[tuple[tuple[str, int], int]]:
    hours = Counter((r["host"], (r["hour_start_ms"] - t.T0) // t.HOUR_MS) for r in records)
    return sorted(hours.items())


def attempt(number: int) -> bool:
    """One kill and restart; True when nothing is missing or different."""
    tmp = Path(tempfile.mkdtemp())
    with Broker(log_path=tmp / "broker.log") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix="p.")
        topics = Topics("p.")
        create_topics(kafka.librdkafka(), "p.")
        events, batches, _ = t.loaded(
            kafka, topics, tmp, 14, hosts=4, gpus=2, hours=12, step_s=10, per_batch=6
        )
        ref = reference(t.samples_of(batches), events)
        with t.worker(kafka, tmp, name="first") as first:
            while len(t.hourly(kafka, topics, 0, timeout_s=2, settle_s=0.5)) < 5:
                pass
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        before = t.hourly(kafka, topics, 0, timeout_s=3, settle_s=2)
        with t.worker(kafka, tmp, name="second"):
            time.sleep(25)
        after = t.hourly(kafka, topics, 0, timeout_s=5, settle_s=3)
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in after:
        key = (r["hour_start_ms"], r["host"], r["gpu_uuid"], r["job_id"], r["tenant"])
        if key not in latest or r["revision"] > latest[key]["revision"]:
            latest[key] = r
    missing = set(ref) - set(latest)
    wrong = []
    for key, row in ref.items():
        record = latest.get(key)
        if record is None:
            continue
        got_g = record["average"]["emissions_g"] if record["average"] else None
        if (
            abs(record["energy_mj"] - row.energy_mj) > 1
            or got_g is None
            or (abs(got_g - (row.average_g or 0)) > 1e-9 * abs(row.average_g or 1))
        ):
            priced = record["average"]["priced_fraction"] if record["average"] else None
            wrong.append(
                f"    {key}: energy {record['energy_mj']} vs {row.energy_mj:.0f} mJ, "
                f"average {got_g} vs {row.average_g} g, priced {priced}, "
                f"revision {record['revision']} {record['status']}"
            )
    print(
        f"attempt {number}: reference {len(ref)} keys, {len(before)} records before the kill, "
        f"{len(after)} after the restart, {len(missing)} keys missing, {len(wrong)} wrong "
        f"(logs in {tmp})"
    )
    print("  before the kill:", by_host_hour(before))
    print("  after the restart:", by_host_hour(after))
    print("\n".join(wrong[:20]))
    return not missing and not wrong


if __name__ == "__main__":
    for n in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        if not attempt(n):
            break
