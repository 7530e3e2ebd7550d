"""Diagnostic for the open SIGKILL defect (docs/matching.md).

Kills a busy worker, restarts it, and prints which (hour, host) finals are missing.
Run from the repo root:

    PYTHONPATH=. python bench/sigkill_probe.py
"""

import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

from schemas.admin import create_topics
from schemas.settings import KafkaSettings
from schemas.topics import Topics
from streams.embedded.broker import Broker
from tests.integration import test_matching_worker as t
from tests.kafka_read import read_topic
from tests.reference_matching import reference

for attempt in range(3):
    tmp = Path(tempfile.mkdtemp())
    with Broker(log_path=tmp / "b.log") as b:
        kafka = KafkaSettings(bootstrap_servers=b.bootstrap, topic_prefix="p.")
        topics = Topics("p.")
        create_topics(kafka.librdkafka(), "p.")
        events = t.intensity(kafka, tmp, hours=14)
        batches = t.trace(hosts=4, gpus=2, hours=12, step_s=10, per_batch=6)
        t.produce(kafka, topics.name("samples"), [(k, v) for k, v, _ in batches])
        ref = reference(t.samples_of(batches), events)
        with t.worker(kafka, tmp, name="first") as first:
            while (
                len(
                    read_topic(
                        b.bootstrap,
                        topics.name("emissions_hourly"),
                        "emissions_hourly",
                        0,
                        partitions=8,
                        timeout_s=2,
                        settle_s=0.5,
                    )
                )
                < 5
            ):
                pass
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        before = read_topic(
            b.bootstrap,
            topics.name("emissions_hourly"),
            "emissions_hourly",
            0,
            partitions=8,
            timeout_s=3,
            settle_s=2,
        )
        with t.worker(kafka, tmp, name="second"):
            time.sleep(25)
        recs = read_topic(
            b.bootstrap,
            topics.name("emissions_hourly"),
            "emissions_hourly",
            0,
            partitions=8,
            timeout_s=5,
            settle_s=3,
        )
        got = {
            (r["hour_start_ms"], r["host"], r["gpu_uuid"], r["job_id"], r["tenant"]) for r in recs
        }
        missing = set(ref) - got
        print(
            "attempt",
            attempt,
            "ref",
            len(ref),
            "before kill",
            len(before),
            "after",
            len(recs),
            "missing",
            len(missing),
        )
        print(
            " missing by host/hour:",
            sorted(Counter(((k[0] - t.T0) // t.HOUR_MS, k[1]) for k in missing).items())[:12],
        )
        print(
            " before kill:",
            sorted(
                Counter(
                    (r["host"], (r["hour_start_ms"] - t.T0) // t.HOUR_MS) for r in before
                ).items()
            ),
        )
        print(
            " after (all):",
            sorted(
                Counter((r["host"], (r["hour_start_ms"] - t.T0) // t.HOUR_MS) for r in recs).items()
            ),
        )
        if missing:
            break
