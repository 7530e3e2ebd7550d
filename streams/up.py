"""`llcr up`: the whole pipeline on one machine, on its embedded default.

Starts a Tansu broker and chDB, creates every topic and table, then runs, each as its own
process exactly as in production:

* the grid feeder, replaying the shipped 2023 Electricity Maps files (or ``--grid-file``)
  at ``--speed`` simulated seconds per second, with their original timestamps;
* one sim GPU agent per host (``--hosts``, spread over ``--zones``), on a simulated clock
  that starts where the grid data starts and runs at the same speed;
* the matching worker;
* the removal service (`llcr actions run`), a simulated capture unit per site and the
  simulated credit provider (a real HTTP server on 127.0.0.1);
* the signals service (`llcr signals run`): eco tier per zone and the routing API;
* the ClickHouse sink, which owns the chDB directory and answers `llcr query` meanwhile.

It prints every final (and revised) hour as it is emitted, until Ctrl-C or --duration.
The chDB directory stays behind for `llcr query` and `llcr report`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click

from schemas.admin import create_topics
from schemas.settings import KafkaSettings
from streams.embedded.broker import Broker
from streams.process import stop_on_signals
from streams.settings import ClickHouseSettings
from streams.store.client import connect
from streams.store.migrations import apply_migrations

logger = logging.getLogger(__name__)


SIM_START = "2023-01-01T00:00:00Z"  # where the shipped grid data starts
DEFAULT_ZONES = ("DE", "FR", "GB")


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".llcr-data"),
    show_default=True,
    help="Where chDB data and logs go.",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C).",
)
@click.option(
    "--port", type=int, default=None, help="Broker port on 127.0.0.1 (default: a free one)."
)
@click.option(
    "--speed",
    type=float,
    default=360.0,
    show_default=True,
    help="Simulated seconds per second (360: an hour every 10 s).",
)
@click.option("--hosts", type=int, default=3, show_default=True, help="Sim GPU hosts.")
@click.option("--gpus", type=int, default=4, show_default=True, help="GPUs per sim host.")
@click.option(
    "--zones",
    default=",".join(DEFAULT_ZONES),
    show_default=True,
    help="Grid zones the hosts are spread over (shipped files: DE, FR, GB, US-CAL-CISO).",
)
@click.option(
    "--grid-file",
    "grid_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Intensity files to replay instead of the shipped ones (repeatable).",
)
@click.option("--start", default=SIM_START, show_default=True, help="Simulated start time.")
def up(
    *,
    data_dir: Path,
    duration: float | None,
    port: int | None,
    speed: float,
    hosts: int,
    gpus: int,
    zones: str,
    grid_files: tuple[Path, ...],
    start: str,
) -> None:
    """Run the whole pipeline on this machine (embedded broker + chDB)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(exist_ok=True)
    stop = threading.Event()
    stop_on_signals(stop)
    started = time.monotonic()
    zone_list = [z.strip() for z in zones.split(",") if z.strip()]
    with Broker(port=port, log_path=data_dir / "broker.log") as broker, ExitStack() as stack:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        results = create_topics(kafka.librdkafka(), kafka.topic_prefix)
        clickhouse = ClickHouseSettings(dsn=f"chdb:{(data_dir / 'chdb').resolve()}")
        client = connect(clickhouse)
        try:
            applied = apply_migrations(client, clickhouse.database)
        finally:
            client.close()  # the sink owns chDB from here on
        click.echo(f"broker    {broker.bootstrap} (Tansu, in memory)")
        click.echo(f"topics    {len(results)} ready ({kafka.topic_prefix}*)")
        click.echo(
            f"chdb      {(data_dir / 'chdb').resolve()} ({len(applied)} migration(s) applied)"
        )
        env = {
            **os.environ,
            "LLCR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        }
        files = [str(f) for f in grid_files] or [
            str(f) for f in _shipped_grid_files() if f.name.split("_")[0] in zone_list
        ]
        spawn = _Spawner(stack, data_dir / "logs", env)
        # started first, stopped last: it stores what the others emit while stopping
        spawn("sink", ["sink"], LLCR_CLICKHOUSE__DSN=clickhouse.dsn)
        removal_env = _removal_env(zone_list, start, speed)
        spawn(
            "provider-sim",
            ["actions", "provider-sim", "--port", removal_env["LLCR_PROVIDER_URL"].split(":")[-1]],
            **removal_env,
        )
        spawn("capture-sim", ["actions", "capture-sim"], **removal_env)
        spawn("actions", ["actions", "run"], **removal_env)
        signals_port = _free_port()
        spawn(
            "signals",
            ["signals", "run"],
            LLCR_API_PORT=str(signals_port),
            LLCR_SIM_START=start,
            LLCR_SIM_SPEED=str(speed),
        )
        spawn(
            "worker",
            ["worker", "--loglevel", "warning"],
            LLCR_DATA_DIR=str(data_dir / "worker"),
            LLCR_ZONES="[" + ",".join(f'"{z}"' for z in zone_list) + "]",
            LLCR_GRACE_S=str(max(5.0, speed)),
            LLCR_MAX_WAIT_S="30",
        )
        spawn(
            "grid",
            [
                "agent",
                "grid",
                "--speed",
                str(speed),
                *[arg for f in files for arg in ("--from-csv", f)],
            ],
            LLCR_STATE_DIR=str(data_dir / "grid"),
        )
        for i in range(hosts):
            zone = zone_list[i % len(zone_list)]
            host = f"sim-{zone.lower()}-{i}"
            spawn(
                f"agent-{host}",
                [
                    "agent",
                    "gpu",
                    "--source",
                    "sim",
                    "--gpus",
                    str(gpus),
                    "--seed",
                    str(i),
                    "--start",
                    start,
                    "--speed",
                    str(speed),
                ],
                LLCR_HOST=host,
                LLCR_ZONE=zone,
                LLCR_SITE=f"{zone.lower()}-site",
                LLCR_SPOOL_DIR=str(data_dir / "agents" / host),
                LLCR_SAMPLE_INTERVAL_S=str(max(0.02, 10.0 / speed)),
            )
        click.echo(
            f"running   sink, removal (capture + credits), worker, grid feeder "
            f"({len(files)} file(s)), {hosts} sim host(s) x {gpus} GPUs at {speed:g}x "
            f"from {start}; logs in {data_dir / 'logs'}"
        )
        click.echo(
            f"signals   http://127.0.0.1:{signals_port}/v1/eco/{zone_list[0]} (and /v1/route)"
        )
        click.echo(f"ready in  {time.monotonic() - started:.1f}s; Ctrl-C stops")
        watcher = threading.Thread(target=_show_hours, args=(kafka, stop), daemon=True)
        watcher.start()
        stop.wait(duration)
        stop.set()
        watcher.join(5)
        _show_removal(clickhouse)
    click.echo("stopped; chDB data kept in " + str((data_dir / "chdb").resolve()))
    click.echo(f'query it: llcr query --dsn {clickhouse.dsn} "SELECT * FROM llcr.emissions"')


class _Spawner:
    """Starts `llcr` subcommands as child processes; stops them when the stack closes."""

    def __init__(self, stack: ExitStack, logs: Path, env: dict[str, str]) -> None:
        self._stack = stack
        self._logs = logs
        self._env = env

    def __call__(self, name: str, argv: list[str], **env: str) -> None:
        self._stack.enter_context(
            _child(name, argv, self._logs / f"{name}.log", {**self._env, **env})
        )


@contextmanager
def _child(name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> Iterator[None]:
    code = "import sys; sys.argv[0] = 'llcr'; from schemas.cli import main; main()"
    log: IO[bytes] = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-c", code, *argv], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in 15 s; killing it", name)
                process.kill()
                process.wait(5)
        log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _removal_env(zones: list[str], start: str, speed: float) -> dict[str, str]:
    """Settings of the removal processes: one sim capture unit per site, the sim provider,
    the simulated clock of the agents, and deadlines short enough to see orders."""
    import json

    units = {
        f"{zone.lower()}-site": {
            "unit_id": f"{zone.lower()}-capture-1",
            "capacity_kg_per_h": 0.5,
            "thermal_kwh_per_t": 2000,
            "electric_kwh_per_t": 2700,
            "recoverable_heat_fraction": 0.6,
            "min_net_g": 10,
            "ramp_kg_per_h_per_h": 2,
        }
        for zone in zones
    }
    return {
        "LLCR_CAPTURE_UNITS": json.dumps(units),
        "LLCR_PROVIDER_URL": f"http://127.0.0.1:{_free_port()}",
        "LLCR_SIM_START": start,
        "LLCR_SIM_SPEED": str(speed),
        "LLCR_MIN_LOT_G": "100",
        "LLCR_LATENCY_TARGET_H": "6",
        "LLCR_ORDER_LEAD_H": "1",
        "LLCR_PLAN_QUIET_S": str(max(0.5, 30.0 / speed)),
        "LLCR_CAPTURE_WINDOW_H": "2",
    }


def _show_removal(clickhouse: ClickHouseSettings) -> None:
    """One line on removal so far, through the sink's query endpoint."""
    from schemas.errors import LlcrError
    from streams.sink.query import run_query

    sql = (
        "SELECT round(sum(obligation_g)), round(sum(removed_g)), round(sum(debt_g)), "
        "countIf(debt_g <= 0.001), count() FROM llcr.carbon_debt_hourly"
    )
    try:
        row = run_query(clickhouse, sql).rows[0]
    except LlcrError as exc:
        click.echo(f"removal   (not available: {exc})")
        return
    click.echo(
        f"removal   obligation {row[0]} g, removed {row[1]} g, debt {row[2]} g; "
        f"{row[3]} of {row[4]} scope-hours fully covered"
    )


def _shipped_grid_files() -> list[Path]:
    from importlib import resources

    folder = resources.files("agents") / "data" / "grid"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".csv"))
    return [Path(str(folder / name)) for name in names]


def _show_hours(kafka: KafkaSettings, stop: threading.Event) -> None:
    """Print each final or revised hour as the worker emits it (the live view)."""
    from confluent_kafka import Consumer, TopicPartition

    from schemas.codec import make_codec
    from schemas.topics import spec

    codec = make_codec(kafka.framing, kafka.registry_ids)
    consumer = Consumer({**kafka.librdkafka(), "group.id": "llcr-up-view"})
    topic = kafka.topics.name("emissions_hourly")
    consumer.assign(
        [TopicPartition(topic, p, 0) for p in range(spec("emissions_hourly").partitions)]
    )
    try:
        while not stop.is_set():
            message = consumer.poll(0.5)
            value = message.value() if message is not None and not message.error() else None
            if value is None:
                continue
            r = codec.decode("emissions_hourly", value)
            hour = datetime.fromtimestamp(r["hour_start_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:00")
            average = r["average"]
            grams = f"{average['emissions_g']:9.1f} gCO2e" if average else "  (no intensity yet)"
            click.echo(
                f"{r['status']:<8} {hour}  {r['host']:<12} {r['zone']:<5} "
                f"{r['gpu_uuid'][-8:]:<8} {r['job_id'][:12]:<12} {r['energy_kwh']:7.3f} kWh {grams}"
                f"  rev {r['revision']}"
            )
    finally:
        consumer.close()
