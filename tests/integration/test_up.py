"""`llcr up` starts the embedded pipeline and leaves chDB data behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.settings import ClickHouseSettings
from streams.store.client import connect


def test_up_runs_for_a_duration_and_leaves_chdb(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from schemas.cli import main; main()",
            "up",
            "--duration",
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
    client = connect(ClickHouseSettings(dsn=f"chdb://{data / 'chdb'}"))
    try:
        assert client.query("SELECT count() FROM llcr.schema_migrations").result_rows[0][0] >= 1
    finally:
        client.close()
