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

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from agents.cli import bundled_grid_files
from schemas import kafka as clients
from schemas.admin import create_topics
from schemas.errors import ConfigError
from schemas.paths import data_home, default_dsn
from schemas.records import EmissionHour
from schemas.settings import KafkaSettings
from schemas.topics import TopicKey
from schemas.units import HOUR_MS
from streams.embedded.broker import Broker, free_port
from streams.process import stop_on_signals
from streams.settings import ClickHouseSettings
from streams.store.client import connect, embedded_dir
from streams.store.migrations import apply_migrations
from streams.supervisor import Supervisor

logger = logging.getLogger(__name__)


SIM_START = "2023-01-01T00:00:00Z"  # where the shipped grid data starts
DEFAULT_ZONES = ("DE", "FR", "GB")
STAGGER_S = 1.5


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
    zone_list = _zones(zones, grid_files, variant, grid_utc_offset)
    # The broker is in memory: nothing of an earlier run may meet this one (its store, the
    # feeder's revision log, spools). A run is a directory of its own.
    data_dir = new_run_dir(home)
    (data_dir / "logs").mkdir(exist_ok=True)
    click.echo(f"run dir   {data_dir} (store linked as {home / 'chdb'})")
    stop = threading.Event()
    stop_on_signals(stop)
    start = start or (_trace_start(gpu_traces) if gpu_traces else SIM_START)
    nvml = live and _has_nvml()
    sim_hosts = hosts if hosts is not None else (0 if gpu_traces or nvml else 3)
    with Broker(port=port, log_path=data_dir / "broker.log") as broker, ExitStack() as stack:
        kafka, clickhouse = _prepare(broker, data_dir)
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
        # started first, stopped last: it stores what the others emit while stopping
        # Latency settings (docs/benchmarks.md, end to end): a simulated hour passes in
        # seconds here, so provisional numbers refresh every 0.5 s instead of every 5 s.
        spawn("sink", ["sink"], LLCR_CLICKHOUSE__DSN=clickhouse.dsn, LLCR_BATCH_MAX_WAIT_S="0.5")
        spawn(
            "worker",
            ["worker", "--loglevel", "warning"],
            LLCR_DATA_DIR=str(data_dir / "worker"),
            LLCR_ZONES="[" + ",".join(f'"{z}"' for z in zone_list) + "]",
            LLCR_GRACE_S=str(max(5.0, clock.speed)),
            LLCR_MAX_WAIT_S="10",
            LLCR_AVERAGE_VARIANT=variant,
            # `up` is the demo: its sim hosts are priced (a deployment's worker is not)
            LLCR_ACCEPT_SOURCES='["nvml","replay","sim"]',
            LLCR_LIVE_EVERY_S="0.5",
            LLCR_TICK_S="0.25",
            # Every tick visits every retained hour of every host. Intensity comes seconds
            # late here at most, and 72 h pass in 12 minutes at 360x: 2 h is plenty.
            LLCR_RETENTION_H=os.environ.get("LLCR_RETENTION_H", "2"),
        )
        # the worker and the sink are the slowest to be ready (imports, group join): they
        # start first, and the rest a moment later, so they do not share the CPU with ten
        # other imports (first emission row in ClickHouse ~3 s sooner on 2 cores)
        stop.wait(STAGGER_S)
        _spawn_removal(spawn, zone_list, clock.speed, data_dir)
        signals_port = free_port()
        spawn("signals", ["signals", "run"], LLCR_API_PORT=str(signals_port), LLCR_VARIANT=variant)
        grid = _spawn_grid(
            spawn, zone_list, grid_files, clock, data_dir / "grid", utc_offset=grid_utc_offset
        )
        _spawn_agents(
            spawn,
            zone_list,
            sim_hosts=sim_hosts,
            gpus=gpus,
            traces=gpu_traces,
            nvml=nvml,
            clock=clock,
            spool_root=data_dir / "agents",
        )
        click.echo(
            f"running   sink, removal (capture + credits), worker, grid feeder ({grid}), "
            f"{sim_hosts} sim host(s) x {gpus} GPUs, {len(gpu_traces)} trace host(s), "
            f"{int(nvml)} NVML host(s); logs in {data_dir / 'logs'}"
        )
        click.echo(
            f"signals   http://127.0.0.1:{signals_port}/v1/eco/{zone_list[0]} (and /v1/route)"
        )
        click.echo(f"ready in  {time.monotonic() - started:.1f}s; Ctrl-C stops")
        redraw = not plain and sys.stdout.isatty()
        watcher = threading.Thread(
            target=_watch, args=(kafka, clickhouse, stop, redraw, spawn.line), daemon=True
        )
        watcher.start()
        supervising = threading.Thread(target=spawn.run, args=(stop,), daemon=True)
        supervising.start()
        stop.wait(duration)
        stop.set()
        supervising.join(5)
        watcher.join(5)
        click.echo(spawn.line())
        click.echo(_removal_line(clickhouse))
    click.echo("stopped; chDB data kept in " + str((data_dir / "chdb").resolve()))
    query_dsn = "" if home / "chdb" == embedded_dir(default_dsn()) else f" --dsn chdb:{home}/chdb"
    click.echo(f'query it: llcr query{query_dsn} "SELECT * FROM llcr.emissions"')


def new_run_dir(home: Path) -> Path:
    """``home/runs/<UTC time>-<pid>``, created, with ``home/chdb`` linked to its store.

    A real directory at ``home/chdb`` (a store not made by `up`) is never replaced."""
    link = home / "chdb"
    if link.exists() and not link.is_symlink():
        raise click.UsageError(
            f"{link} is a store of its own, not a link `llcr up` made: "
            "give up another --data-dir (or LLCR_HOME)"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run = home / "runs" / f"{stamp}-{os.getpid()}"
    run.mkdir(parents=True)
    staged = home / f".chdb-{os.getpid()}"
    staged.unlink(missing_ok=True)
    staged.symlink_to(Path("runs") / run.name / "chdb", target_is_directory=True)
    os.replace(staged, link)  # atomic: a reader sees the old run or the new one
    return run


def _prepare(broker: Broker, data_dir: Path) -> tuple[KafkaSettings, ClickHouseSettings]:
    """Every topic on the broker and every table in chDB, then chDB closed for the sink."""
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
    click.echo(f"chdb      {(data_dir / 'chdb').resolve()} ({len(applied)} migration(s) applied)")
    return kafka, clickhouse


@dataclass(frozen=True)
class Clock:
    """How every process tells time: one simulated clock that reads ``start`` at the wall
    clock's ``anchor_ms`` and runs ``speed`` times faster, or (``start`` None) the wall
    clock itself."""

    start: str | None
    speed: float
    anchor_ms: int | None

    def env(self) -> dict[str, str]:
        if self.start is None:
            return {}
        return {
            "LLCR_SIM_START": self.start,
            "LLCR_SIM_SPEED": str(self.speed),
            "LLCR_SIM_ANCHOR_MS": str(self.anchor_ms),
        }

    def args(self) -> list[str]:
        """The agents' and the feeder's options for this clock."""
        if self.start is None:
            return []
        return [
            "--start",
            self.start,
            "--anchor-ms",
            str(self.anchor_ms),
            "--speed",
            str(self.speed),
        ]

    def __str__(self) -> str:
        if self.start is None:
            return "the wall clock (live)"
        return f"{self.start} at epoch ms {self.anchor_ms}, {self.speed:g}x (every process)"


def _has_nvml() -> bool:
    """Whether this machine has a GPU that NVML can read."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount()) > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no GPU: pynvml raises NVMLError or OSError
        return False


def _spawn_grid(
    spawn: Supervisor,
    zones: list[str],
    files: tuple[Path, ...],
    clock: Clock,
    state_dir: Path,
    *,
    utc_offset: str | None,
) -> str:
    """The grid feeder: files replayed on the simulated clock, or (live) the providers
    polled, with each zone's shipped 2023 mean as the static fallback. Says what it runs."""
    if clock.start is not None:
        paths = [str(f) for f in files] or [
            str(f) for f in bundled_grid_files() if f.name.split("_")[0] in zones
        ]
        offset = {} if utc_offset is None else {"LLCR_FILE_UTC_OFFSET": utc_offset}
        spawn(
            "grid",
            ["agent", "grid", *clock.args(), *[arg for f in paths for arg in ("--from-csv", f)]],
            LLCR_STATE_DIR=str(state_dir),
            **offset,
        )
        return f"{len(paths)} file(s)"
    fallback = _shipped_means(zones)
    spawn(
        "grid",
        ["agent", "grid"],
        LLCR_STATE_DIR=str(state_dir),
        LLCR_ZONES=json.dumps(zones),
        LLCR_STATIC_G_PER_KWH=json.dumps(fallback),
        LLCR_POLL_INTERVAL_S="60",
    )
    return f"live providers; static fallback for {', '.join(fallback) or 'no zone'}"


def _shipped_means(zones: list[str]) -> dict[str, float]:
    """Each zone's mean direct intensity over the shipped 2023 file (g/kWh)."""
    from agents.grid.files import read_intensity_csv

    means = {}
    for path in bundled_grid_files():
        zone = path.name.split("_")[0]
        if zone in zones:
            with path.open(encoding="utf-8-sig", newline="") as lines:
                observations, _ = read_intensity_csv(lines, path.name)
            values = [o.value for o in observations if o.variant == "direct"]
            means[zone] = round(sum(values) / len(values), 2)
    return means


def _spawn_removal(spawn: Supervisor, zones: list[str], speed: float, run_dir: Path) -> None:
    """The removal service, its sim capture units and the sim credit provider; the
    ledger's head checkpoint beside the run's store, where `llcr ledger verify` finds it."""
    from streams.removal.checkpoint import HEAD_FILE

    removal_env = {**_removal_env(zones, speed), "LLCR_LEDGER_HEAD": str(run_dir / HEAD_FILE)}
    spawn(
        "provider-sim",
        ["actions", "provider-sim", "--port", removal_env["LLCR_PROVIDER_URL"].split(":")[-1]],
        **removal_env,
    )
    spawn("capture-sim", ["actions", "capture-sim"], **removal_env)
    spawn("actions", ["actions", "run"], **removal_env)


def _spawn_agents(
    spawn: Supervisor,
    zones: list[str],
    *,
    sim_hosts: int,
    gpus: int,
    traces: tuple[Path, ...],
    nvml: bool,
    clock: Clock,
    spool_root: Path,
) -> None:
    """One GPU agent for this machine's GPUs (``nvml``), per sim host and per trace, given
    zones in turn."""
    agents: list[tuple[str, list[str]]] = []
    if nvml:
        agents.append((_slug(socket.gethostname()) or "this-host", ["--source", "nvml"]))
    for i in range(sim_hosts):
        sim = ["--source", "sim", "--gpus", str(gpus), "--seed", str(i), *clock.args()]
        agents.append((f"sim-{zones[len(agents) % len(zones)].lower()}-{i}", sim))
    for i, path in enumerate(traces):
        # paced by the shared clock (not from its own first reading), so its samples are
        # not "in the future" for the worker, which checks them against that clock
        replay = ["--source", "replay", "--trace", str(path), *clock.args()]
        agents.append((f"trace-{_slug(path.stem)}-{i}", replay))
    for i, (host, source) in enumerate(agents):
        zone = zones[i % len(zones)]
        spawn(
            f"agent-{host}",
            ["agent", "gpu", *source],
            LLCR_HOST=host,
            LLCR_ZONE=zone,
            LLCR_SITE=f"{zone.lower()}-site",
            LLCR_SPOOL_DIR=str(spool_root / host),
            LLCR_SAMPLE_INTERVAL_S=str(1.0 if clock.start is None else max(0.02, 10 / clock.speed)),
            LLCR_PUBLISH_INTERVAL_S="0.25",
        )


def _zones(
    zones: str | None, grid_files: tuple[Path, ...], variant: str, utc_offset: str | None
) -> list[str]:
    """The zones asked for, else the zones of the grid files, else the default ones.

    Each grid file is read now, so what would leave every hour unpriced fails at start in
    one line: a file that cannot be read (naive times without ``--grid-utc-offset``), or
    whose average intensity for a zone it covers is not in the variant priced."""
    from agents.grid.files import IntensityFileError, parse_utc_offset, read_intensity_csv

    offset = None if utc_offset is None else parse_utc_offset(utc_offset)
    found: list[str] = []
    for path in grid_files:
        with path.open(encoding="utf-8-sig", newline="") as lines:
            try:
                observations, _ = read_intensity_csv(lines, path.name, offset)
            except IntensityFileError as exc:
                raise ConfigError(f"--grid-file {exc}") from None
        offered: dict[str, set[str]] = {}
        for o in observations:
            if o.signal == "average":
                offered.setdefault(o.zone, set()).add(o.variant)
        for zone, variants in sorted(offered.items()):
            if variant not in variants:
                raise ConfigError(
                    f"--grid-file {path.name}: its average intensity for {zone} is "
                    f"{' and '.join(sorted(variants))} only, and up prices the {variant} "
                    "variant, so every hour would stay unpriced",
                    hint=f"pass --variant {min(variants)}, or a file with {variant} values",
                )
        found += sorted({o.zone for o in observations} - set(found))
    if zones:
        return [z.strip() for z in zones.split(",") if z.strip()]
    if not grid_files:
        return list(DEFAULT_ZONES)
    if not found:
        raise ConfigError("--grid-file: no zone in the grid files")
    return found


def _trace_start(traces: tuple[Path, ...]) -> str:
    """The hour (ISO, UTC) of the earliest reading of the traces."""
    from agents.gpu.replay import TraceError, parse_trace

    firsts = []
    for path in traces:
        try:
            with path.open(newline="") as lines:
                firsts.append(parse_trace(lines).readings[0].t_ms)
        except (TraceError, IndexError) as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--gpu-trace") from exc
    hour_ms = min(firsts) // HOUR_MS * HOUR_MS
    return datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:24]


def _removal_env(zones: list[str], speed: float) -> dict[str, str]:
    """Settings of the removal processes: one sim capture unit per site, the sim provider,
    and deadlines short enough to see orders."""
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
        "LLCR_PROVIDER_URL": f"http://127.0.0.1:{free_port()}",
        "LLCR_MIN_LOT_G": "100",
        "LLCR_LATENCY_TARGET_H": "6",
        "LLCR_ORDER_LEAD_H": "1",
        "LLCR_PLAN_QUIET_S": str(max(0.5, 30.0 / speed)),
        "LLCR_CAPTURE_WINDOW_H": "2",
    }


def _removal_line(clickhouse: ClickHouseSettings) -> str:
    """One line on removal so far, through the sink's query endpoint."""
    from schemas.errors import LlcrError
    from streams.sink.query import run_query
    from streams.view import REMOVAL_SQL, removal_of, removal_text

    try:
        return removal_text(removal_of(run_query(clickhouse, REMOVAL_SQL, endpoint_only=True).rows))
    except LlcrError as exc:
        return f"removal   (not available: {exc})"


def _watch(
    kafka: KafkaSettings,
    clickhouse: ClickHouseSettings,
    stop: threading.Event,
    redraw: bool,
    children: Callable[[], str],
) -> None:
    """Feed the live view from the pipeline's topics and store until ``stop``.

    ``redraw``: redraw it in place (rich); otherwise print each final or revised hour as a
    line and a status line every 10 s. ``children``: the supervisor's line. A record the
    view cannot decode or show is counted and skipped: the view outlives any message.
    """
    from confluent_kafka import TopicPartition
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from schemas.codec import make_codec
    from schemas.errors import LlcrError
    from schemas.topics import spec
    from streams.sink.query import run_query
    from streams.view import REMOVAL_SQL, TOPICS, LiveView, removal_of, render, status_line

    codec = make_codec(kafka.framing, kafka.registry_ids)
    consumer = clients.consumer(kafka, "llcr-up-view")
    keys: dict[str, TopicKey] = {kafka.topics.name(key): key for key in TOPICS}
    consumer.assign(
        [
            TopicPartition(name, p, 0)
            for name, key in keys.items()
            for p in range(spec(key).partitions)
        ]
    )
    view = LiveView()
    skipped = 0
    console = Console()
    display = Live(console=console, refresh_per_second=2, transient=False) if redraw else None
    next_removal = next_status = time.monotonic() + 2
    try:
        if display is not None:
            display.start()
        while not stop.is_set():
            for message in consumer.consume(500, 0.25):
                shown = _feed(view, codec, keys, message)
                if shown is None:
                    skipped += 1
                elif shown and display is None:
                    click.echo(shown)
            now = time.monotonic()
            if now >= next_removal:
                next_removal = now + 2
                with suppress(LlcrError):  # the sink is starting or stopping: "waiting"
                    view.on_removal(
                        removal_of(run_query(clickhouse, REMOVAL_SQL, endpoint_only=True).rows)
                    )
            footer = children() + (f"; {skipped} record(s) the view skipped" if skipped else "")
            if display is not None:
                display.update(Group(render(view.snapshot(now)), Text(footer)))
            elif now >= next_status:
                next_status = now + 10
                click.echo(status_line(view.snapshot(now)))
                click.echo(footer)
    finally:
        if display is not None:
            display.stop()
        consumer.close()


def _feed(view: Any, codec: Any, keys: dict[str, TopicKey], message: Any) -> str | None:
    """Give one consumed message to the view: the line to print for it ("" for none), or
    None when it could not be decoded or shown (a record must never stop the view)."""
    from schemas.topics import spec

    value, topic = message.value(), message.topic()
    if message.error() or value is None or topic is None:
        return ""
    key = keys[topic]
    try:
        record: Any = codec.decode(spec(key).schema, value)
        view.feed(key, record, time.monotonic())
        return hour_line(record) if key == "emissions_hourly" else ""
    except Exception as exc:  # counted by the caller
        logger.debug("the view skipped a record of %s: %s", topic, exc)
        return None


def hour_line(r: EmissionHour) -> str:
    """One final or revised hour as a line of text."""
    hour = datetime.fromtimestamp(r["hour_start_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:00")
    average = r.get("average")
    grams = f"{average['emissions_g']:9.1f} gCO2e" if average else "  (no intensity yet)"
    return (
        f"{r['status']:<8} {hour}  {r['host']:<12} {r['zone']:<5} "
        f"{r['gpu_uuid'][-8:]:<8} {r['job_id'][:12]:<12} {r['energy_kwh']:7.3f} kWh {grams}"
        f"  rev {r['revision']}"
    )


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
