"""`llcr up` starts the embedded pipeline and leaves chDB data behind."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

LLCR = [sys.executable, "-c", "from schemas.cli import main; main()"]


def test_up_runs_the_pipeline_to_final_hours_and_leaves_chdb(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dsn = f"chdb:{(data / 'chdb').resolve()}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from schemas.cli import main; main()",
            "up",
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
        start_new_session=True,  # a process group, as a terminal gives it
    )
    started = time.monotonic()
    # while it runs, `llcr query` goes through the sink that owns chDB
    during = 0
    deadline = started + 40
    while during == 0 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(2)
        during = max(0, count(dsn, "SELECT count() FROM llcr.emissions_hourly"))
    assert during > 0, "no hourly emissions reached ClickHouse while up ran"
    # a child that dies is restarted; one restarts on request
    run = (data / "chdb").resolve().parent
    os.kill(int((run / "control" / "worker.pid").read_text()), signal.SIGKILL)
    asked = restart_child(data, "signals")
    assert asked.returncode == 0 and "signals restarted on request" in asked.stdout, asked
    nobody = restart_child(data, "nobody")
    assert nobody.returncode == 1 and "no child named 'nobody'" in nobody.stdout, nobody
    time.sleep(max(0.0, started + 60 - time.monotonic()))
    # Ctrl-C: the terminal sends SIGINT to the whole foreground process group
    os.killpg(process.pid, signal.SIGINT)
    interrupted = time.monotonic()
    stdout, stderr = process.communicate(timeout=120)
    stopping_s = time.monotonic() - interrupted
    assert stopping_s < 30, f"up took {stopping_s:.0f} s to stop"
    first_store = (data / "chdb").resolve()  # the link up made to this run's store
    assert first_store.parent.parent == (data / "runs").resolve()
    for log in (first_store.parent / "logs").iterdir():
        assert "Traceback" not in log.read_text(errors="replace"), log.name
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr
    assert "topics    10 ready" in result.stdout
    assert "stopped; chDB data kept" in result.stdout
    assert "worker exited with -9; restarting in 1 s" in result.stdout, result.stdout[-3000:]
    children = [line for line in result.stdout.splitlines() if line.startswith("children")][-1]
    assert "worker up, 1 restart(s)" in children, children
    assert "signals up, 1 restart(s)" in children, children
    # the agents, the grid feeder and the worker ran as processes: final hours came out,
    # priced with the shipped intensity of the hosts' zones
    finals = [line.split() for line in result.stdout.splitlines() if line.startswith("final")]
    assert finals, result.stdout + (first_store.parent / "logs" / "worker.log").read_text()[-2000:]
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
    verified = verify_ledger(dsn)
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stderr
    entries = verified.stdout

    # `up` again on the same data dir: a run of its own, nothing mixed with the first
    argv = ["up", "--speed", "1200", "--hosts", "1", "--gpus", "1", "--duration", "20"]
    again = subprocess.run(
        [LLCR_SCRIPT, *argv, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    second_store = (data / "chdb").resolve()
    assert second_store != first_store and f"run dir   {second_store.parent}" in again.stdout
    assert count(dsn, "SELECT count() FROM llcr.grid_intensity FINAL") > 0  # priced again
    second = verify_ledger(dsn)
    assert second.returncode == 0 and "chain intact" in second.stdout, second.stderr
    assert count(dsn, "SELECT uniqExact(chain_id) FROM llcr.ledger") == 1
    first = verify_ledger(f"chdb:{first_store}")
    assert first.returncode == 0 and first.stdout == entries  # the first run is untouched


LLCR_SCRIPT = str(Path(sys.executable).parent / "llcr")  # the installed console script


def wait_for_line(path: Path, prefix: str, process: subprocess.Popen[str]) -> str:
    """The rest of the first line of ``path`` starting with ``prefix``, once written."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        for line in path.read_text().splitlines():
            if line.startswith(prefix):
                return line.removeprefix(prefix).split()[0].rstrip(",")
        time.sleep(0.1)
    raise AssertionError(f"no line {prefix!r} in {path}: {path.read_text()[-2000:]}")


def restart_child(data: Path, name: str) -> subprocess.CompletedProcess[str]:
    """`llcr restart NAME` against the `up` running on ``data``."""
    return subprocess.run(
        [LLCR_SCRIPT, "restart", name, "--data-dir", str(data)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def verify_ledger(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLCR_SCRIPT, "ledger", "verify", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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


def query_rows(dsn: str, sql: str) -> list[dict[str, Any]]:
    """The rows a `llcr query --format json` prints."""
    done = subprocess.run(
        [*LLCR, "query", "--dsn", dsn, "--format", "json", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


# A zone, a day and files `up` has never seen: a generic intensity CSV (average lifecycle
# and direct every 30 min, marginal every 60 min) and an llcr trace of two GPUs at 10 s.
ZONE = "PL"
T0 = 1_740_787_200_000  # 2025-03-01T00:00:00Z
MIN = 60_000


def write_grid(
    path: Path, backlog_days: int = 0
) -> dict[tuple[str, str], list[tuple[int, int, float]]]:
    """The file, and the step functions it describes per (signal, variant); with
    ``backlog_days`` of periods before the trace (published at once at start)."""
    steps: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
    lines = ["zone,period_start,period_end,value,signal,variant"]
    for kind, variant, minutes, base in (
        ("average", "lifecycle", 30, 610.0),
        ("average", "direct", 30, 540.0),
        ("marginal", "direct", 60, 820.0),
    ):
        for i in range(-backlog_days * 24 * 60 // minutes, 0):
            start, end = T0 + i * minutes * MIN, T0 + (i + 1) * minutes * MIN
            lines.append(f"{ZONE},{start},{end},{base + 37.25 * ((i * 7) % 5)},{kind},{variant}")
        for i in range(4 * 60 // minutes):
            start, end = T0 + i * minutes * MIN, T0 + (i + 1) * minutes * MIN
            value = base + 37.25 * ((i * 7) % 5) - 11.5 * i
            steps.setdefault((kind, variant), []).append((start, end, value))
            lines.append(f"{ZONE},{start},{end},{value},{kind},{variant}")
    path.write_text("\n".join(lines) + "\n")
    return steps


def write_trace(path: Path) -> list[tuple[int, int, int]]:
    """The trace, and its intervals (start_ms, end_ms, energy_mj) over both GPUs."""
    header = "timestamp_ms,gpu,uuid,model,power_limit_w,energy_mj,power_w"
    lines, intervals = [header], []
    for gpu in (0, 1):
        counter, t_prev = 5_000_000 + gpu, None
        for i in range(2 * 360 + 60):  # 00:20 .. 02:30, every 10 s
            t = T0 + 20 * MIN + i * 10_000 + gpu * 1_234
            watts = 180.0 + 140.0 * ((i // 30 + gpu) % 4) + (i % 7) * 3.5
            if t_prev is not None:
                step = round(watts * (t - t_prev))  # W x ms = mJ
                intervals.append((t_prev, t, step))
                counter += step
            lines.append(f"{t},{gpu},GPU-trace-{gpu},NVIDIA H100,700,{counter},{watts}")
            t_prev = t
    path.write_text("\n".join(lines) + "\n")
    return intervals


def independent(
    intervals: list[tuple[int, int, int]], steps: list[tuple[int, int, float]]
) -> dict[int, tuple[float, float]]:
    """Per hour: kWh, and the integral of power x intensity in grams (energy spread
    uniformly over each trace interval, cut at every hour and period boundary)."""
    out: dict[int, tuple[float, float]] = {}
    for start, end, mj in intervals:
        cuts = sorted(
            {start, end}
            | {b for s, e, _ in steps for b in (s, e) if start < b < end}
            | {h for h in range(start // 3_600_000 * 3_600_000, end, 3_600_000) if start < h}
        )
        for a, b in itertools.pairwise(cuts):
            kwh = mj * (b - a) / (end - start) / 3.6e9
            value = next(v for s, e, v in steps if s <= a < e)
            hour = a // 3_600_000 * 3_600_000
            energy, grams = out.get(hour, (0.0, 0.0))
            out[hour] = (energy + kwh, grams + kwh * value)
    return out


def test_up_on_a_grid_file_and_a_gpu_trace_matches_an_independent_calculation(
    tmp_path: Path,
) -> None:
    grid, trace = tmp_path / "pl_intensity.csv", tmp_path / "two_gpus.csv"
    # 120 days of intensity before the trace (14,400 events): a backlog the worker reads
    # at start while the first hours close unpriced; they must be revised when their
    # price comes, not forgotten. The worker reads intensity through faust at a few
    # thousand events a second: 365 days (43,800) took most of a loaded CI run's 45 s,
    # and one hour's revision did not make it before the end.
    steps = write_grid(grid, backlog_days=120)
    intervals = write_trace(trace)
    data = tmp_path / "data"
    argv = ["up", "--grid-file", str(grid), "--gpu-trace", str(trace), "--speed", "600"]
    out = tmp_path / "up.out"
    with out.open("w") as stdout:
        process = subprocess.Popen(
            [*LLCR, *argv, "--duration", "60", "--data-dir", str(data)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        # the grid feeder restarted mid-run (an hour of the file published, more to come)
        # must not leave an hour unpriced or price one twice
        anchor = wait_for_line(out, "clock     2025-03-01T00:00:00Z at epoch ms ", process)
        while time.time() * 1000 < int(anchor) + 9_000 and process.poll() is None:
            time.sleep(0.2)  # until the shared clock reads 01:30
        restarted = restart_child(data, "grid")
        assert restarted.returncode == 0, restarted
        _, stderr = process.communicate(timeout=180)
    done = subprocess.CompletedProcess(process.args, process.returncode, out.read_text(), stderr)
    assert done.returncode == 0, done.stderr
    # the zone and the start came from the files
    assert "0 sim host(s)" in done.stdout and "1 trace host(s)" in done.stdout, done.stdout
    assert "clock     2025-03-01T00:00:00Z at epoch ms" in done.stdout
    dsn = f"chdb:{(data / 'chdb').resolve()}"
    rows = query_rows(
        dsn,
        "SELECT toUnixTimestamp64Milli(hour_start) AS hour, sum(energy_kwh) AS kwh, "
        "sum(emissions_average_g) AS average_g, sum(emissions_marginal_g) AS marginal_g, "
        "groupUniqArray(zone) AS zones, groupUniqArray(status) AS statuses, "
        "groupUniqArrayArray(providers_average) AS providers, "
        "groupUniqArray(variant_average) AS variants "
        "FROM llcr.emissions_hourly FINAL GROUP BY hour ORDER BY hour",
    )
    average = independent(intervals, steps[("average", "lifecycle")])
    marginal = independent(intervals, steps[("marginal", "direct")])
    assert [int(r["hour"]) for r in rows] == sorted(average), (rows, done.stdout[-3000:])
    for row in rows:
        hour = int(row["hour"])
        kwh, grams = average[hour]
        assert row["kwh"] == pytest.approx(kwh, rel=1e-9)
        assert row["average_g"] == pytest.approx(grams, rel=1e-9)
        assert row["marginal_g"] == pytest.approx(marginal[hour][1], rel=1e-9)
        assert row["zones"] == [ZONE] and set(row["statuses"]) <= {"final", "revised"}
        assert row["providers"] == ["csv:pl_intensity.csv"] and row["variants"] == ["lifecycle"]


def test_up_live_runs_on_the_wall_clock_with_the_static_fallback(tmp_path: Path) -> None:
    """No GPU and no provider keys here: sim hosts on the wall clock, priced with the
    shipped 2023 mean of the zone, which says it is an estimate. (DE only: no keyless
    provider serves it, so nothing leaves 127.0.0.1.)"""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLCR_")}
    argv = ["up", "--live", "--zones", "DE", "--hosts", "1", "--duration", "30"]
    done = subprocess.run(
        [*LLCR, *argv, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "clock     the wall clock (live)" in done.stdout
    assert "static fallback for DE" in done.stdout
    dsn = f"chdb:{(data / 'chdb').resolve()}"
    (event,) = query_rows(
        dsn,
        "SELECT zone, intensity_g_per_kwh AS g, provider, kind, variant, "
        "toUnixTimestamp64Milli(period_start) AS start FROM llcr.grid_intensity FINAL",
    )
    assert (event["zone"], event["provider"], event["kind"], event["variant"]) == (
        "DE",
        "static",
        "estimated",
        "direct",
    )
    assert abs(event["start"] / 1000 - time.time()) < 2 * 3600  # this hour, not 2023
    (live,) = query_rows(
        dsn,
        "SELECT sum(energy_mj) AS mj, sum(emissions_average_g) AS g, "
        "toUnixTimestamp64Milli(max(as_of)) AS as_of FROM llcr.emissions_live FINAL",
    )
    assert live["mj"] > 0 and abs(live["as_of"] / 1000 - time.time()) < 120
    assert live["g"] == pytest.approx(live["mj"] / 3.6e9 * event["g"], rel=1e-6)
