"""Exit codes and one-line errors through the installed `llcr` console script, as cron,
CI and systemd see them: 0 fine, 1 a check failed, 2 a missing store, broker or GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from streams.embedded.broker import free_port
from streams.removal.checkpoint import write_head
from streams.removal.ledger import Head, entry_hash
from streams.settings import ClickHouseSettings
from streams.sink.rows import TABLES
from streams.store.client import connect
from streams.store.migrations import apply_migrations
from tests.unit.test_removal_core import chain_of, tampered_tails

LLCR = str(Path(sys.executable).parent / "llcr")


def llcr(*argv: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLCR, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={**os.environ, **env},
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llcr: error: "), done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], done.stderr


def _store_with_ledger(directory: Path, entries: list[dict[str, Any]]) -> str:
    settings = ClickHouseSettings(dsn=f"chdb:{directory}")
    client = connect(settings)
    try:
        apply_migrations(client, settings.database)
        table = TABLES["ledger"]
        rows = [row for entry in entries for row in table.rows(entry)]
        client.insert(f"llcr.{table.table}", rows, column_names=list(table.columns))
    finally:
        client.close()  # one process per chDB directory: the command opens it next
    return settings.dsn


def test_ledger_verify_exits_1_on_every_kind_of_tamper(tmp_path: Path) -> None:
    entries = chain_of(40)
    # the removal service's head checkpoint, beside the stores (where `up` keeps it)
    last = entries[-1]
    write_head(tmp_path / "ledger-head.json", Head(last["chain_id"], last["seq"], last["hash"]))
    intact = _store_with_ledger(tmp_path / "intact", entries)
    done = llcr("ledger", "verify", "--dsn", intact)
    assert done.returncode == 0, done.stderr
    assert "ledger OK: 40 entries, chain intact, ends at its head checkpoint" in done.stdout

    edited = [dict(e) for e in entries]
    edited[3]["quantity_g"] = 1000.0
    forked = dict(entries[4], quantity_g=7.0)
    forked["hash"] = entry_hash(forked)
    second_run = chain_of(2)  # another chain (a second `up` on one store, a new topic)
    cases = {
        "edited": edited,
        "fork": [*entries, forked],
        "second chain": [*entries, *second_run],
        "missing": entries[:2] + entries[3:],
        **tampered_tails(entries),
    }
    for name, tampered in cases.items():
        dsn = _store_with_ledger(tmp_path / name.replace(" ", "-"), tampered)
        done = llcr("ledger", "verify", "--dsn", dsn)
        assert done.returncode == 1, (name, done.stdout, done.stderr)
        assert "ledger BROKEN" in done.stderr, (name, done.stderr)
    # without a checkpoint the tail cannot be proven: that is not "OK" either
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    unproven = llcr("ledger", "verify", "--dsn", _store_with_ledger(alone / "store", entries))
    assert unproven.returncode == 1 and "ledger UNPROVEN: no head checkpoint" in unproven.stderr
    chain_only = llcr("ledger", "verify", "--dsn", f"chdb:{alone / 'store'}", "--no-head")
    assert chain_only.returncode == 0, chain_only.stderr
    assert "tail not checked (--no-head)" in chain_only.stdout
    head = str(tmp_path / "ledger-head.json")
    given = llcr("ledger", "verify", "--dsn", f"chdb:{alone / 'store'}", "--head", head)
    assert given.returncode == 0, given.stderr


def test_a_missing_store_is_an_error_naming_it_and_is_not_created(tmp_path: Path) -> None:
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for argv in (("query", "SELECT 1"), ("ledger", "verify"), ("report", "--out", "r.html")):
        done = llcr(*argv, cwd=elsewhere, LLCR_HOME=str(home))
        one_line_error(done, 2, f"no llcr store at {home / 'chdb'}", "hint:")
    assert not home.exists() and list(elsewhere.iterdir()) == []
    explicit = llcr("query", "--dsn", f"chdb:{tmp_path / 'nope'}", "SELECT 1")
    one_line_error(explicit, 2, f"no llcr store at {tmp_path / 'nope'}")
    assert not (tmp_path / "nope").exists()


def test_no_broker_and_no_gpu_are_one_line_and_exit_2(tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    done = llcr("ledger", "verify", "--from", "topic", LLCR_KAFKA__BOOTSTRAP_SERVERS=nobody)
    one_line_error(done, 2, f"cannot reach a Kafka broker at {nobody}", "hint:")
    # no NVML on this machine: the default source is NVML, and nothing is simulated
    gpu = llcr("agent", "gpu", "--zone", "DE", "--site", "s1", "--duration", "2", cwd=tmp_path)
    one_line_error(gpu, 2, "no NVIDIA GPU readable through NVML", "--source sim")
    unknown = llcr("agent", "gpu", "--zone", "Narnia", "--site", "s1", "--once")
    one_line_error(unknown, 2, "'Narnia' is not a known grid zone")


def test_up_refuses_a_grid_file_it_could_not_price_in_one_line_before_any_run(
    tmp_path: Path,
) -> None:
    header = "zone,period_start,period_end,value,signal\n"
    naive = tmp_path / "naive.csv"
    naive.write_text(header + "PL,2025-03-01 00:00,2025-03-01 01:00,610,average\n")
    direct = tmp_path / "direct.csv"  # no variant column: direct
    direct.write_text(header + "PL,2025-03-01T00:00Z,2025-03-01T01:00Z,610,average\n")
    home = tmp_path / "home"
    done = llcr("up", "--grid-file", str(naive), "--duration", "5", "--data-dir", str(home))
    one_line_error(done, 2, "naive.csv line 2: naive time '2025-03-01 00:00'", "--utc-offset")
    done = llcr("up", "--grid-file", str(direct), "--duration", "5", "--data-dir", str(home))
    one_line_error(
        done, 2, "average intensity for PL is direct only", "prices the lifecycle", "--variant"
    )
    assert not home.exists()  # refused before a run directory or store link was made
