"""Benchmark: the GPU agent's own cost, sim source at 1 Hz x 8 GPUs, against a local broker.

Runs ``llcr agent gpu --source sim --gpus 8`` as a child process for ``--duration`` seconds
(default 60) and reads its CPU time and memory from /proc: steady state (from 10 s in, after
imports and connect) and whole run. Goal (issue 3): < 0.2 % of one core, < 40 MB RSS.

    python bench/agent_gpu.py [--duration 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from schemas.admin import create_topics
from streams.embedded.broker import Broker

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()
    llcr = shutil.which("llcr") or sys.exit("llcr is not on PATH: pip install -e '.[agent]'")
    warmup = 10.0
    with Broker() as broker, tempfile.TemporaryDirectory() as tmp:
        create_topics({"bootstrap.servers": broker.bootstrap}, "bench.")
        env = {
            **os.environ,
            "LLCR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "LLCR_KAFKA__TOPIC_PREFIX": "bench.",
            "LLCR_SPOOL_DIR": tmp,
            "LLCR_HOST": "bench-host",
        }
        started = time.monotonic()
        child = subprocess.Popen(
            [
                llcr,
                "agent",
                "gpu",
                "--source",
                "sim",
                "--gpus",
                str(args.gpus),
                "--duration",
                str(args.duration + warmup),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(warmup)
        cpu0, wall0 = cpu_s(child.pid), time.monotonic()
        time.sleep(args.duration - 0.5)
        cpu1, wall1 = cpu_s(child.pid), time.monotonic()
        rss_kb, hwm_kb = status_kb(child.pid, "VmRSS"), status_kb(child.pid, "VmHWM")
        total_cpu, total_wall = cpu1, wall1 - started
        _, stderr = child.communicate(timeout=60)
    steady = (cpu1 - cpu0) / (wall1 - wall0)
    print(f"agent: sim source, {args.gpus} GPUs, 1 Hz sampling, 1 s publish, local Tansu broker")
    print(
        f"steady state ({wall1 - wall0:.1f} s from {warmup:.0f} s in): "
        f"{cpu1 - cpu0:.2f} CPU s = {100 * steady:.3f} % of one core"
    )
    print(
        f"whole run incl. start-up ({total_wall:.1f} s): {total_cpu:.2f} CPU s = "
        f"{100 * total_cpu / total_wall:.3f} % of one core"
    )
    print(f"RSS now {rss_kb / 1024:.1f} MiB, peak (VmHWM) {hwm_kb / 1024:.1f} MiB")
    print(f"agent says: {stderr.strip().splitlines()[-1] if stderr.strip() else '(nothing)'}")


if __name__ == "__main__":
    main()
