"""Starting a `llcr up` run's processes: the store and topics first, then each
deployable as its own child of the supervisor, with the settings `up` gives it."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import click

from schemas.admin import create_topics
from schemas.settings import KafkaSettings
from streams.embedded.broker import Broker, free_port
from streams.settings import ClickHouseSettings
from streams.store.client import connect
from streams.store.migrations import apply_migrations
from streams.supervisor import Supervisor
from streams.up.plan import (
    Clock,
    RunPlan,
    agent_env,
    grid_env,
    removal_env,
    shipped_files,
    shipped_means,
    signals_env,
    sink_env,
    slug,
    worker_env,
)


def prepare(broker: Broker, data_dir: Path) -> tuple[KafkaSettings, ClickHouseSettings]:
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


# the worker and the sink are the slowest to be ready (imports, group join): they start
# first, and the rest this much later, so they do not share the CPU with ten other
# imports (first emission row in ClickHouse ~3 s sooner on 2 cores)
STAGGER_S = 1.5


def spawn_run(spawn: Supervisor, run: RunPlan, dsn: str, stop: threading.Event) -> list[str]:
    """Every process of the run, in the order they start; the lines that say what runs."""
    spawn_store_and_worker(
        spawn, dsn, run.zones, run.clock, variant=run.variant, run_dir=run.run_dir
    )
    stop.wait(STAGGER_S)
    spawn_removal(spawn, run.zones, run.clock.speed, run.run_dir)
    signals_port = free_port()
    spawn("signals", ["signals", "run"], **signals_env(signals_port, run.variant))
    grid = spawn_grid(
        spawn,
        run.zones,
        run.grid_files,
        run.clock,
        run.run_dir / "grid",
        utc_offset=run.grid_utc_offset,
    )
    spawn_agents(
        spawn,
        run.zones,
        sim_hosts=run.sim_hosts,
        gpus=run.gpus,
        traces=run.traces,
        nvml=run.nvml,
        clock=run.clock,
        spool_root=run.run_dir / "agents",
    )
    return [
        f"running   sink, removal (capture + credits), worker, grid feeder ({grid}), "
        f"{run.sim_hosts} sim host(s) x {run.gpus} GPUs, {len(run.traces)} trace host(s), "
        f"{int(run.nvml)} NVML host(s); logs in {run.run_dir / 'logs'}",
        f"signals   http://127.0.0.1:{signals_port}/v1/eco/{run.zones[0]} (and /v1/route)",
    ]


def spawn_store_and_worker(
    spawn: Supervisor, dsn: str, zones: list[str], clock: Clock, *, variant: str, run_dir: Path
) -> None:
    """The sink (started first, stopped last: it stores what the others emit while
    stopping) and the matching worker."""
    spawn("sink", ["sink"], **sink_env(dsn))
    spawn(
        "worker",
        ["worker", "--loglevel", "warning"],
        **worker_env(zones, clock, variant, run_dir / "worker"),
    )


def spawn_grid(
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
        paths = [str(f) for f in files or shipped_files(zones)]
        spawn(
            "grid",
            ["agent", "grid", *clock.args(), *[arg for f in paths for arg in ("--from-csv", f)]],
            **grid_env(state_dir, utc_offset=utc_offset),
        )
        return f"{len(paths)} file(s)"
    fallback = shipped_means(zones)
    spawn("grid", ["agent", "grid"], **grid_env(state_dir, live_zones=zones, static=fallback))
    return f"live providers; static fallback for {', '.join(fallback) or 'no zone'}"


def spawn_removal(spawn: Supervisor, zones: list[str], speed: float, run_dir: Path) -> None:
    """The removal service, its sim capture units and the sim credit provider; the
    ledger's head checkpoint beside the run's store, where `llcr ledger verify` finds it."""
    from streams.settings import HEAD_FILE

    settings = removal_env(zones, speed, run_dir / HEAD_FILE)
    spawn(
        "provider-sim",
        ["actions", "provider-sim", "--port", settings["LLCR_PROVIDER_URL"].split(":")[-1]],
        **settings,
    )
    spawn("capture-sim", ["actions", "capture-sim"], **settings)
    spawn("actions", ["actions", "run"], **settings)


def spawn_agents(
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
        agents.append((slug(socket.gethostname()) or "this-host", ["--source", "nvml"]))
    for i in range(sim_hosts):
        sim = ["--source", "sim", "--gpus", str(gpus), "--seed", str(i), *clock.args()]
        agents.append((f"sim-{zones[len(agents) % len(zones)].lower()}-{i}", sim))
    for i, path in enumerate(traces):
        # paced by the shared clock (not from its own first reading), so its samples are
        # not "in the future" for the worker, which checks them against that clock
        replay = ["--source", "replay", "--trace", str(path), *clock.args()]
        agents.append((f"trace-{slug(path.stem)}-{i}", replay))
    for i, (host, source) in enumerate(agents):
        zone = zones[i % len(zones)]
        spawn(
            f"agent-{host}",
            ["agent", "gpu", *source],
            **agent_env(host, zone, spool_root / host, clock),
        )
