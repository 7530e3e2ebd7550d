"""`llcr up`: the whole pipeline on one machine, on its embedded default.

Starts a Tansu broker and chDB, creates every topic and table, then runs, each as its own
process exactly as in production:

* the grid feeder, replaying the shipped 2023 Electricity Maps files (or ``--grid-file``)
  with their original timestamps, each period when the simulated clock reaches it;
* one sim GPU agent per host (``--hosts``, spread over ``--zones``) on the simulated clock,
  and one replaying agent per ``--gpu-trace``;
* the matching worker;
* the removal service (`llcr actions run`), a simulated capture unit per site and the
  simulated credit provider (a real HTTP server on 127.0.0.1);
* the signals service (`llcr signals run`): eco tier per zone and the routing API;
* the ClickHouse sink, which owns the chDB directory and answers `llcr query` meanwhile.

Every process runs on one simulated clock: ``--start`` at an anchor instant on the wall
clock, ``--speed`` simulated seconds per second. A live view (``streams.view``) shows the
hosts, open and final hours, removal, carbon debt and signals until Ctrl-C or
``--duration``. The chDB directory stays behind for `llcr query` and `llcr report`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import click

from schemas.paths import data_home, default_dsn
from schemas.settings import KafkaSettings
from streams.embedded.broker import Broker
from streams.process import stop_on_signals
from streams.settings import ClickHouseSettings
from streams.store.client import embedded_dir
from streams.supervisor import Supervisor
from streams.up.plan import (
    SIM_START,
    Clock,
    RunPlan,
    has_nvml,
    new_run_dir,
    trace_start,
    zones_of,
)
from streams.up.spawn import STAGGER_S, prepare, spawn_run
from streams.up.watch import removal_line, watch


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where runs are kept (default: LLCR_HOME, else ~/.local/share/llcr). Each run gets "
    "a directory of its own under runs/, and DIR/chdb links to the newest run's store.",
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
@click.option(
    "--hosts",
    type=int,
    default=None,
    help="Sim GPU hosts (default 3, or 0 with --gpu-trace).",
)
@click.option("--gpus", type=int, default=4, show_default=True, help="GPUs per sim host.")
@click.option(
    "--zones",
    default=None,
    help="Grid zones the hosts are spread over, comma-separated (default: the zones of "
    "--grid-file, else DE,FR,GB; shipped files: DE, FR, GB, US-CAL-CISO).",
)
@click.option(
    "--grid-file",
    "grid_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Intensity files to replay instead of the shipped ones (repeatable; Electricity "
    "Maps portal export or the generic CSV of docs/grid-feeder.md).",
)
@click.option(
    "--gpu-trace",
    "gpu_traces",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="GPU traces to replay, one host each, zones in turn (repeatable; llcr or "
    "nvidia-smi CSV, docs/replay-format.md).",
)
@click.option(
    "--start",
    default=None,
    help=f"Simulated start time (default: the hour of the first trace reading, else {SIM_START}).",
)
@click.option(
    "--variant",
    type=click.Choice(["direct", "lifecycle"]),
    default=None,
    help="The average-intensity variant the worker prices and signals use (default: "
    "lifecycle, or direct with --live). A grid file without it fails at start.",
)
@click.option(
    "--grid-utc-offset",
    default=None,
    help="The UTC offset (+hh:mm) of naive local times in --grid-file (default: refuse them).",
)
@click.option(
    "--live",
    is_flag=True,
    help="Run on the wall clock instead of replaying 2023: this machine's GPUs through NVML "
    "when it has any (else sim hosts), intensity polled from the configured providers, and "
    "each zone's shipped 2023 mean (flagged estimated) where no provider answers.",
)
@click.option(
    "--plain",
    is_flag=True,
    help="Print lines (each final hour, a status line every 10 s) instead of the live view; "
    "the default when stdout is not a terminal.",
)
def up(
    *,
    data_dir: Path | None,
    duration: float | None,
    port: int | None,
    speed: float,
    hosts: int | None,
    gpus: int,
    zones: str | None,
    grid_files: tuple[Path, ...],
    gpu_traces: tuple[Path, ...],
    start: str | None,
    live: bool,
    plain: bool,
    variant: str | None,
    grid_utc_offset: str | None,
) -> None:
    """Run the whole pipeline on this machine (embedded broker + chDB)."""
    home = (data_dir or data_home()).absolute()
    if live and (grid_files or gpu_traces or start):
        raise click.UsageError(
            "--live runs on the wall clock: no --grid-file, --gpu-trace, --start"
        )
    started = time.monotonic()
    # what cannot work fails before a run directory exists (and the store link moves)
    variant = variant or ("direct" if live else "lifecycle")
    zone_list = zones_of(zones, grid_files, variant, grid_utc_offset)
    # The broker is in memory: nothing of an earlier run may meet this one (its store, the
    # feeder's revision log, spools). A run is a directory of its own.
    data_dir = new_run_dir(home)
    (data_dir / "logs").mkdir(exist_ok=True)
    click.echo(f"run dir   {data_dir} (store linked as {home / 'chdb'})")
    stop = threading.Event()
    stop_on_signals(stop)
    start = start or (trace_start(gpu_traces) if gpu_traces else SIM_START)
    nvml = live and has_nvml()
    sim_hosts = hosts if hosts is not None else (0 if gpu_traces or nvml else 3)
    with Broker(port=port, log_path=data_dir / "broker.log") as broker, ExitStack() as stack:
        kafka, clickhouse = prepare(broker, data_dir)
        anchor_ms = int(time.time() * 1000 + (STAGGER_S + 1.5) * 1000)  # agents are up by then
        clock = Clock(None, 1.0, None) if live else Clock(start, speed, anchor_ms)
        env = {
            **os.environ,
            "LLCR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "LLCR_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            **clock.env(),
        }
        click.echo(f"clock     {clock}")
        click.echo(f"pricing   average intensity, {variant} variant (worker and signals)")
        spawn = Supervisor(stack, data_dir / "logs", env, data_dir / "control", report=click.echo)
        (data_dir / "up.pid").write_text(str(os.getpid()))
        run = RunPlan(
            run_dir=data_dir,
            zones=zone_list,
            variant=variant,
            clock=clock,
            grid_files=grid_files,
            grid_utc_offset=grid_utc_offset,
            sim_hosts=sim_hosts,
            gpus=gpus,
            traces=gpu_traces,
            nvml=nvml,
        )
        for line in spawn_run(spawn, run, clickhouse.dsn, stop):
            click.echo(line)
        click.echo(f"ready in  {time.monotonic() - started:.1f}s; Ctrl-C stops")
        _run_until_stopped(spawn, kafka, clickhouse, stop, duration=duration, plain=plain)
    click.echo("stopped; chDB data kept in " + str((data_dir / "chdb").resolve()))
    query_dsn = "" if home / "chdb" == embedded_dir(default_dsn()) else f" --dsn chdb:{home}/chdb"
    click.echo(f'query it: llcr query{query_dsn} "SELECT * FROM llcr.emissions"')


def _run_until_stopped(
    spawn: Supervisor,
    kafka: KafkaSettings,
    clickhouse: ClickHouseSettings,
    stop: threading.Event,
    *,
    duration: float | None,
    plain: bool,
) -> None:
    """Watch and supervise until Ctrl-C or ``duration``; then the children's last line
    and removal so far (the children stop when the caller's stack closes)."""
    redraw = not plain and sys.stdout.isatty()
    watcher = threading.Thread(
        target=watch, args=(kafka, clickhouse, stop, redraw, spawn.line), daemon=True
    )
    watcher.start()
    supervising = threading.Thread(target=spawn.run, args=(stop,), daemon=True)
    supervising.start()
    stop.wait(duration)
    stop.set()
    supervising.join(5)
    watcher.join(5)
    click.echo(spawn.line())
    click.echo(removal_line(clickhouse))


@click.command("restart")
@click.argument("name")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The --data-dir the running `llcr up` was given (default: LLCR_HOME).",
)
def restart(name: str, data_dir: Path | None) -> None:
    """Restart one process of the running `llcr up` (sink, worker, agent-..., grid, ...)."""
    from schemas.errors import InfrastructureError
    from streams.supervisor import request_restart

    home = (data_dir or data_home()).absolute()
    link = home / "chdb"
    if not link.is_symlink():
        raise InfrastructureError(f"no `llcr up` run under {home}", hint="start one: llcr up")
    run = link.resolve().parent
    try:
        os.kill(int((run / "up.pid").read_text()), 0)
    except (OSError, ValueError) as exc:
        raise InfrastructureError(
            f"the newest run, {run}, is not running", hint="start one: llcr up"
        ) from exc
    answer = request_restart(run / "control", name)
    if answer is None:
        raise InfrastructureError(f"`llcr up` in {run} did not answer in 30 s")
    click.echo(answer)
    if answer.startswith("no child"):
        raise click.exceptions.Exit(1)
