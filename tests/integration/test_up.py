"""`llcr up` starts the embedded pipeline and leaves chDB data behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def test_up_runs_the_pipeline_to_final_hours_and_leaves_chdb(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dsn = f"chdb:{(data / 'chdb').resolve()}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from schemas.cli import main; main()",
            "up",
            "--duration",
            "45",
            "--speed",
            "1200",
            "--hosts",
            "2",
            "--gpus",
            "2",
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    # while it runs, `llcr query` goes through the sink that owns chDB
    during = 0
    deadline = time.monotonic() + 40
    while during == 0 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(2)
        during = max(0, count(dsn, "SELECT count() FROM llcr.emissions_hourly"))
    assert during > 0, "no hourly emissions reached ClickHouse while up ran"
    stdout, stderr = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr
    assert "topics    10 ready" in result.stdout
    assert "stopped; chDB data kept" in result.stdout
    # the agents, the grid feeder and the worker ran as processes: final hours came out,
    # priced with the shipped intensity of the hosts' zones
    finals = [line.split() for line in result.stdout.splitlines() if line.startswith("final")]
    assert finals, result.stdout + (data / "logs" / "worker.log").read_text()[-2000:]
    assert {f[3] for f in finals} == {"sim-de-0", "sim-fr-1"}
    # (on a loaded machine the feeder can lag the agents: an hour may close before its
    # intensity arrives, and is then revised with it; nothing stays unpriced but the last)
    lines = [
        line.split() for line in result.stdout.splitlines() if line.startswith(("final", "revised"))
    ]
    priced = {tuple(f[1:7]) for f in lines if f[-3] == "gCO2e" and float(f[-4]) >= 0}
    last_hour = max((f[1], f[2]) for f in lines)
    unpriced = {tuple(f[1:7]) for f in finals if f[-3] != "gCO2e"}
    assert priced and all(k in priced or (k[0], k[1]) == last_hour for k in unpriced), result.stdout
    # after it: the sink stored every hour that was emitted (the live view may stop before
    # the last ones print), each once
    stored = count(dsn, "SELECT count() FROM llcr.emissions_hourly FINAL")
    assert stored >= len(finals) and stored >= during
    assert count(dsn, "SELECT uniqExact(record_id) FROM llcr.emissions_hourly") == stored
    assert count(dsn, "SELECT count() FROM llcr.gpu_samples FINAL") > 0
    # the removal loop ran: obligations ledgered, capture commanded, the chain intact
    assert "removal   obligation" in result.stdout
    assert count(dsn, "SELECT count() FROM llcr.ledger FINAL WHERE kind = 'emission_hour'") > 0
    assert count(dsn, "SELECT count() FROM llcr.capture_commands FINAL") > 0
    assert count(dsn, "SELECT count() FROM llcr.signals FINAL WHERE kind = 'eco_mode'") > 0
    verified = subprocess.run(
        [
            sys.executable,
            "-c",
            "from schemas.cli import main; main()",
            "ledger",
            "verify",
            "--dsn",
            dsn,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stderr


def count(dsn: str, sql: str) -> int:
    """The one number a `llcr query` prints (-1 when the command fails)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from schemas.cli import main; main()",
            "query",
            "--dsn",
            dsn,
            "--format",
            "json",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return -1
    (row,) = json.loads(done.stdout)
    return int(next(iter(row.values())))
