"""On a GPU machine: run the agent on real NVML against a real broker under a real load.

Writes to $OUT (or ./device-out): the recorded llcr trace, an nvidia-smi trace, a metrics
scrape and results.json. Checks that the published energy per GPU equals the NVML counter
delta over the same readings and that sequence numbers are gap-free.

    LLCR_TANSU_BIN=... PYTHONPATH=. python bench/nvml_device_check.py
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from confluent_kafka import Consumer, TopicPartition

from agents.gpu.run import SourceSetup, build_agent, run
from agents.gpu.sources import NvmlSource, SimSource
from agents.gpu.trace import RecordingSource
from agents.settings import GpuAgentSettings
from schemas.admin import create_topics
from schemas.codec import Codec
from schemas.settings import KafkaSettings
from schemas.topics import spec
from streams.embedded.broker import Broker, free_port

OUT = Path(os.environ.get("OUT", "device-out"))
DURATION_S = 48.0


def consume(bootstrap: str, topic: str, expected: int) -> list[dict]:
    codec = Codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(spec("samples").partitions)])
    batches: list[dict] = []
    deadline = time.monotonic() + 30
    while len(batches) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            batches.append(codec.decode("gpu_sample_batch", message.value()))
    consumer.close()
    return batches


def main() -> int:
    """``--sim``: a dry run of this script with the sim source (no GPU, no load)."""
    sim = "--sim" in sys.argv
    duration = 6.0 if sim else DURATION_S
    OUT.mkdir(parents=True, exist_ok=True)
    with Broker(log_path=OUT / "tansu.log") as broker, tempfile.TemporaryDirectory() as tmp:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix="dev.")
        create_topics(kafka.librdkafka(), "dev.")
        port = free_port()
        settings = GpuAgentSettings(
            kafka=kafka, spool_dir=Path(tmp), host="h100-dev", metrics_port=port, source="nvml"
        )
        trace_path = OUT / "h100_nvml_trace.csv"
        nvml = SimSource(gpus=2) if sim else NvmlSource()

        def errors() -> int:
            return int(getattr(nvml, "errors", 0))

        with trace_path.open("w", newline="") as trace:
            source = RecordingSource(nvml, trace)
            agent = build_agent(settings, SourceSetup(source, "nvml"))
            smi = subprocess.Popen(
                ["sleep", "60"]
                if sim
                else [
                    "nvidia-smi",
                    "--query-gpu=timestamp,index,uuid,name,power.draw,power.limit,"
                    "utilization.gpu,memory.used,temperature.gpu",
                    "--format=csv",
                    "-lms",
                    "1000",
                ],
                stdout=(OUT / "h100_nvidia_smi.csv").open("w"),
            )
            # Two jobs share the GPU (time-sliced): a heavy one and one at 30 % duty.
            loads = [
                subprocess.Popen(
                    ["sleep", "1"] if sim else [sys.executable, "bench/gpu_load.py", duty],
                    env={**os.environ, "LLCR_JOB": job, "LLCR_TENANT": "llcr-dev"},
                    stdout=(OUT / f"gpu_load_{job}.log").open("w"),
                )
                for job, duty in (("matmul-heavy", "1.0"), ("matmul-light", "0.3"))
            ]
            stop = threading.Event()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            wall0 = time.monotonic()
            result: dict = {}
            thread = threading.Thread(
                target=lambda: result.setdefault(
                    "publisher",
                    run(
                        settings,
                        agent,
                        stop,
                        duration_s=duration,
                        nvml_errors=errors,
                    ),
                )
            )
            thread.start()
            time.sleep(duration - 3)
            (OUT / "metrics.txt").write_text(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
            thread.join(60)
            wall = time.monotonic() - wall0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            for load in loads:
                load.wait(30)
            smi.terminate()
        publisher = result["publisher"]
        batches = consume(broker.bootstrap, kafka.topics.name("samples"), publisher.stats.delivered)
    rows = list(csv.DictReader(trace_path.open()))
    checks = {}
    for uuid in {r["uuid"] for r in rows}:
        mine = [r for r in rows if r["uuid"] == uuid]
        delta = int(mine[-1]["energy_mj"]) - int(mine[0]["energy_mj"])
        samples = sorted(
            (s for b in batches for s in b["samples"] if s["gpu_uuid"] == uuid),
            key=lambda s: s["seq"],
        )
        jobs: dict[str, int] = {}
        for s in samples:
            for j in s["jobs"]:
                jobs[j["job_id"]] = jobs.get(j["job_id"], 0) + j["energy_mj"]
        checks[uuid] = {
            "counter_delta_mj": delta,
            "published_mj": sum(s["energy_mj"] for s in samples),
            "samples": len(samples),
            "seq_gap_free": [s["seq"] for s in samples] == list(range(len(samples))),
            "methods": sorted({s["energy_method"] for s in samples}),
            "flags": sorted({f for s in samples for f in s["flags"]}),
            "max_power_w": max(s["power_w"] for s in samples),
            "jobs_mj": jobs,
        }
    cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    summary = {
        "batches_delivered": publisher.stats.delivered,
        "batches_read": len(batches),
        "wall_s": round(wall, 2),
        "process_cpu_s_incl_checker": round(cpu_s, 3),
        "peak_rss_mb": round(cpu1.ru_maxrss / 1024, 1),
        "rejected": agent.counters.rejected,
        "nvml_errors": errors(),
        "gpus": checks,
    }
    (OUT / "results.json").write_text(json.dumps(summary, indent=2))
    per_sample = [
        (s["seq"], s["energy_mj"], s["flags"], [(j["job_id"], j["energy_mj"]) for j in s["jobs"]])
        for b in batches
        for s in b["samples"]
    ]
    (OUT / "samples.json").write_text(json.dumps(sorted(per_sample)))
    print(json.dumps(summary, indent=2))
    ok = all(
        c["counter_delta_mj"] == c["published_mj"] and c["seq_gap_free"] for c in checks.values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
