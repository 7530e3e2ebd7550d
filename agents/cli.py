"""`llcr agent ...`: commands that run on edge hosts. Imports only `schemas` and `agents`."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import click

from agents.settings import GpuAgentSettings, GridFeederSettings
from schemas.cli import config_file
from schemas.clock import simulated_clock
from schemas.settings import LlcrSettings

_DEPLOYABLES: dict[str, type[LlcrSettings]] = {
    "gpu": GpuAgentSettings,
    "grid": GridFeederSettings,
}


@click.group()
def agent() -> None:
    """Edge publishers: the GPU agent and the grid-intensity feeder."""


@agent.command("config")
@click.argument("deployable", type=click.Choice(sorted(_DEPLOYABLES)))
@click.pass_context
def show_config(ctx: click.Context, deployable: str) -> None:
    """Print the effective settings of DEPLOYABLE as JSON (secrets masked)."""
    settings = _DEPLOYABLES[deployable].load(config_file(ctx))
    click.echo(json.dumps(settings.redacted(), indent=2))


@agent.command("gpu")
@click.option(
    "--source",
    type=click.Choice(["nvml", "sim", "replay"]),
    default=None,
    help="Where readings come from (default from settings: nvml; without a GPU that is an "
    "error, never a silent simulation).",
)
@click.option(
    "--trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Trace CSV for --source replay (llcr or nvidia-smi format; docs/replay-format.md).",
)
@click.option(
    "--speed",
    type=float,
    default=None,
    help="Replay speed (trace s per wall s; 0 = at once); with --start, the sim clock's speed.",
)
@click.option(
    "--start",
    default=None,
    help="Sim or replay source: run on a simulated clock from this UTC time (ISO-8601), --speed "
    "times faster than real time (what `llcr up` does to line up with replayed grid data).",
)
@click.option(
    "--anchor-ms",
    type=int,
    default=None,
    help="With --start: the wall-clock epoch ms at which the simulated clock reads --start "
    "(default: when this process starts). Processes given the same pair share one clock.",
)
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default from settings).")
@click.option(
    "--zone", default=None, help="Grid zone id pricing this host (required; env LLCR_ZONE)."
)
@click.option("--site", default=None, help="Data-centre site (required; env LLCR_SITE).")
@click.option("--gpus", type=int, default=8, show_default=True, help="GPUs of the sim source.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sim source.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--once", is_flag=True, help="Print one batch as JSON and exit (checks a host; no Kafka)."
)
@click.pass_context
def gpu(
    ctx: click.Context,
    *,
    source: str | None,
    trace: Path | None,
    speed: float | None,
    start: str | None,
    anchor_ms: int | None,
    bootstrap: str | None,
    zone: str | None,
    site: str | None,
    gpus: int,
    seed: int,
    duration: float | None,
    once: bool,
) -> None:
    """Publish this host's GPU energy samples to the samples topic."""
    from agents.gpu.run import build_agent, make_source, run

    overrides: dict[str, object] = {}
    if source:
        overrides["source"] = source
    if trace:
        overrides["replay_file"] = trace
    if speed is not None:
        overrides["replay_speed"] = speed
    if zone is not None:
        overrides["zone"] = zone
    if site is not None:
        overrides["site"] = site
    settings = GpuAgentSettings.load(config_file(ctx), **overrides)
    if bootstrap:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        settings = settings.model_copy(update={"kafka": kafka})
    setup = make_source(settings, gpus, seed)
    if start is not None:
        if setup.kind not in ("sim", "replay"):
            raise click.UsageError("--start runs the sim or replay source on a simulated clock")
        setup.clock = simulated_clock(start, speed or 1.0, anchor_ms)
        if anchor_ms is not None:  # sample from the shared start, not before it
            time.sleep(max(0.0, anchor_ms / 1000 - time.time()))
    agent_ = build_agent(settings, setup)
    if once:
        agent_.sample(int(setup.clock() * 1000))
        time.sleep(settings.sample_interval_s)
        agent_.sample(int(setup.clock() * 1000))
        click.echo(json.dumps(agent_.take_batch(int(time.time() * 1000)), indent=2))
        return
    stop = _stop_on_signals()
    errors = getattr(setup.source, "errors", 0)
    publisher = run(
        settings,
        agent_,
        stop,
        duration_s=duration,
        clock=setup.clock,
        nvml_errors=lambda: int(getattr(setup.source, "errors", errors)),
    )
    stats = publisher.stats
    click.echo(
        f"sampled {agent_.counters.samples} sample(s); {stats.delivered} batch(es) delivered "
        f"to {settings.kafka.bootstrap_servers}, {stats.spooled_at_stop} left in the spool "
        f"(sent at next start); rejected {agent_.counters.rejected or 'none'}",
        err=True,
    )


@agent.command("trace")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="CSV to write."
)
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds per row.")
def trace_command(out: Path, duration: float, interval: float) -> None:
    """Record this host's real NVML readings as a trace that --source replay reads."""
    from agents.gpu.sources import NvmlSource
    from agents.gpu.trace import record

    source = NvmlSource()
    try:
        with out.open("w", newline="") as handle:
            rows = record(source, handle, duration_s=duration, interval_s=interval)
    finally:
        source.close()
    click.echo(f"wrote {rows} rows for {len(source.devices())} GPU(s) to {out}", err=True)


def bundled_grid_files() -> list[Path]:
    """The Electricity Maps 2023 portal files shipped in the package (ODbL)."""
    from importlib import resources

    folder = resources.files("agents") / "data" / "grid"
    return sorted(
        Path(str(folder / name.name)) for name in folder.iterdir() if name.name.endswith(".csv")
    )


@agent.command("grid")
@click.option(
    "--from-csv",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Import an Electricity Maps portal export or a generic intensity CSV (repeatable).",
)
@click.option(
    "--bundled", is_flag=True, help="Import the shipped 2023 files (DE, FR, GB, US-CAL-CISO)."
)
@click.option(
    "--speed",
    type=float,
    default=0.0,
    show_default=True,
    help="File seconds per wall second when importing (3600: an hour per second; 0: at once).",
)
@click.option(
    "--start",
    default=None,
    help="With --speed: publish each period when a simulated clock that reads this UTC time "
    "now (or at --anchor-ms) reaches the period's start; earlier periods go at once.",
)
@click.option(
    "--anchor-ms",
    type=int,
    default=None,
    help="With --start: the wall-clock epoch ms at which the simulated clock reads --start.",
)
@click.option(
    "--utc-offset",
    default=None,
    help="The UTC offset (+hh:mm) of naive local times in the files (default: refuse them).",
)
@click.option("--once", is_flag=True, help="Poll the providers once and exit.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default from settings).")
@click.pass_context
def grid(
    ctx: click.Context,
    *,
    files: tuple[Path, ...],
    bundled: bool,
    speed: float,
    start: str | None,
    anchor_ms: int | None,
    utc_offset: str | None,
    once: bool,
    bootstrap: str | None,
) -> None:
    """Publish grid carbon-intensity events: poll providers, or import files."""
    from agents.grid.model import iso
    from agents.grid.run import import_files, poll_forever

    settings = GridFeederSettings.load(config_file(ctx))
    if bootstrap:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        settings = settings.model_copy(update={"kafka": kafka})
    if utc_offset is not None:
        settings = settings.model_copy(update={"file_utc_offset": utc_offset})
    stop = _stop_on_signals()
    paths = [*files, *(bundled_grid_files() if bundled else [])]
    if paths:
        if start is not None and speed <= 0:
            raise click.UsageError("--start paces the import on a simulated clock: give --speed")
        clock = simulated_clock(start, speed, anchor_ms) if start is not None else None
        result = import_files(settings, paths, speed=speed, stop=stop, clock=clock)
        for problem in result.problems:
            click.echo(f"rejected [{problem.code}] {problem.reason}", err=True)
        for gap in result.gaps:
            click.echo(
                f"gap {gap.zone} {gap.signal}/{gap.variant}: nothing for "
                f"{iso(gap.start_ms)}..{iso(gap.end_ms)}",
                err=True,
            )
        click.echo(
            f"read {result.events} event(s): {result.delivered} delivered to "
            f"{settings.kafka.bootstrap_servers}, {result.spooled} left in the spool (sent at "
            f"next start); rejected {len(result.problems)} input(s); {len(result.gaps)} gap(s), "
            f"{result.filled} period(s) filled with flagged estimates",
            err=True,
        )
        return
    feeder = poll_forever(settings, stop, once=once)
    click.echo(
        f"built {feeder.stats.events} event(s); rejected {feeder.stats.problems or 'none'} "
        "(see the log for what is left in the spool)",
        err=True,
    )


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
