"""Diagnostic for crash safety (docs/matching.md, "Crash and rebalance safety").

Kills a busy worker as soon as it has emitted a few hourly records, restarts it, and
prints which (hour, host) finals are missing against the reference. Run from the repo root:

    PYTHONPATH=. python bench/sigkill_probe.py
"""

from __future__ import annotations

import pickle
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
from streams.topic_reader import committed_offsets, read_to_end
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
        at_kill = snapshot(kafka, topics)
        print(
            "  committed at the kill:",
            sorted((p, o) for (_, p), o in at_kill["committed"].items() if o),
        )
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
    wrong_keys: list[tuple[Any, ...]] = []
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
            wrong_keys.append(key)
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
    for key in wrong_keys:
        explain(key, at_kill, kafka, topics)
    return not missing and not wrong


def snapshot(kafka: KafkaSettings, topics: Topics) -> dict[str, Any]:
    """What the killed worker left: its committed offsets and its hosts changelog."""
    conf = kafka.librdkafka()
    samples = topics.name("samples")
    committed = committed_offsets(conf, "llcr-worker-p", [(samples, p) for p in range(8)])
    changelog = "llcr-worker-p-matching-hosts-changelog"
    slices = [
        (m.partition(), m.offset(), m.key(), pickle.loads(m.value()) if m.value() else None)
        for m in read_to_end(conf, changelog, 8)
    ]
    messages = [
        (m.partition(), m.offset(), m.key(), m.value()) for m in read_to_end(conf, samples, 8)
    ]
    return {"committed": committed, "slices": slices, "samples": messages}


def explain(
    key: tuple[Any, ...], at_kill: dict[str, Any], kafka: KafkaSettings, topics: Topics
) -> None:
    """For a wrong (hour, host, GPU, job, tenant): the messages of its hour, whether the
    slice stored at the kill held their sequence numbers, and whether they were committed."""
    hour, host, uuid = key[0], key[1], key[2]
    stored = [s for s in at_kill["slices"] if s[2] == f"{host}|{hour}".encode()]
    print(f"  {key}: {len(stored)} writes of its slice at the kill")
    last = stored[-1][3] if stored else None
    applied = last.gpus[uuid].applied if last is not None and uuid in last.gpus else None
    if last is not None:
        print(
            f"    newest write: partition {stored[-1][0]} offset {stored[-1][1]}, applied {applied}"
        )
    samples = topics.name("samples")
    for partition, offset, message_key, value in at_kill["samples"]:
        if message_key != host.encode():
            continue
        batch = t.codec.decode("gpu_sample_batch", value)
        seqs = [
            x["seq"]
            for x in batch["samples"]
            if x["gpu_uuid"] == uuid and x["start_ms"] < hour + t.HOUR_MS and x["end_ms"] > hour
        ]
        if not seqs:
            continue
        held = [q for q in seqs if applied is not None and q in applied]
        committed = at_kill["committed"].get((samples, partition), 0)
        state = "held" if len(held) == len(seqs) else ("partly held" if held else "NOT held")
        print(
            f"    offset {partition}:{offset} seqs {seqs[0]}..{seqs[-1]} {state}, "
            f"{'committed' if offset < committed else 'after the commit'} ({committed})"
        )


if __name__ == "__main__":
    for n in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        if not attempt(n):
            break
