"""`llcr up` starts the embedded pipeline and leaves chDB data behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.settings import ClickHouseSettings
from streams.store.client import connect


def test_up_runs_the_pipeline_to_final_hours_and_leaves_chdb(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = subprocess.run(
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
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "topics    10 ready" in result.stdout
    assert "stopped; chDB data kept" in result.stdout
    # the agents, the grid feeder and the worker ran as processes: final hours came out,
    # priced with the shipped intensity of the hosts' zones
    finals = [line.split() for line in result.stdout.splitlines() if line.startswith("final")]
    assert finals, result.stdout + (data / "logs" / "worker.log").read_text()[-2000:]
    assert {f[3] for f in finals} == {"sim-de-0", "sim-fr-1"}
    assert all(f[-3] == "gCO2e" and float(f[-4]) >= 0 for f in finals)
    client = connect(ClickHouseSettings(dsn=f"chdb://{data / 'chdb'}"))
    try:
        assert client.query("SELECT count() FROM llcr.schema_migrations").result_rows[0][0] >= 1
    finally:
        client.close()
