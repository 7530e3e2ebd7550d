"""Stream-side commands: `llcr migrate`, `llcr worker`, `llcr sink`, `llcr query`."""

from __future__ import annotations

from pathlib import Path

import click

from schemas.cli import config_file
from schemas.errors import LlcrError
from streams.settings import ActionsSettings, SinkSettings, WorkerSettings
from streams.store.client import connect
from streams.store.migrations import apply_migrations


@click.command()
@click.option(
    "--dsn",
    default=None,
    help="ClickHouse DSN (default from settings): chdb:DIR or http(s)://host:port.",
)
@click.pass_context
def migrate(ctx: click.Context, dsn: str | None) -> None:
    """Apply ClickHouse migrations to the configured store (idempotent)."""
    clickhouse = _sink_settings(ctx, dsn).clickhouse
    client = connect(clickhouse)
    try:
        applied = apply_migrations(client, clickhouse.database)
    finally:
        client.close()
    click.echo(
        f"applied {len(applied)} migration(s): {applied}" if applied else "schema up to date"
    )


@click.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default from settings).")
@click.option("--loglevel", default="info", show_default=True)
@click.pass_context
def worker(ctx: click.Context, bootstrap: str | None, loglevel: str) -> None:
    """Run the matching processors (any number of workers share the partitions)."""
    from streams.matching.run import run_worker

    settings = WorkerSettings.load(config_file(ctx))
    if bootstrap:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        settings = settings.model_copy(update={"kafka": kafka})
    run_worker(settings, loglevel=loglevel)


def _sink_settings(ctx: click.Context, dsn: str | None) -> SinkSettings:
    settings = SinkSettings.load(config_file(ctx))
    if dsn is None:
        return settings
    clickhouse = settings.clickhouse.model_copy(update={"dsn": dsn})
    return settings.model_copy(update={"clickhouse": clickhouse})


@click.command()
@click.option("--dsn", default=None, help="ClickHouse DSN (default from settings).")
@click.option(
    "--from-earliest",
    is_flag=True,
    help="Re-read every topic from its start (rows already stored are not duplicated).",
)
@click.pass_context
def sink(ctx: click.Context, dsn: str | None, from_earliest: bool) -> None:
    """Write every topic to ClickHouse, committing offsets after each insert."""
    from streams.sink.run import run_sink

    settings = _sink_settings(ctx, dsn)
    stats = run_sink(settings, from_earliest=from_earliest)
    click.echo(f"sink stopped: {stats.messages} message(s), rows {dict(stats.rows)}")


FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)


@click.command()
@click.argument("sql")
@click.option("--dsn", default=None, help="ClickHouse DSN (default from settings).")
@FORMAT_OPTION
@click.pass_context
def query(ctx: click.Context, sql: str, dsn: str | None, fmt: str) -> None:
    """Run SQL against the store (through the running sink when it owns chDB)."""
    from streams.sink.query import render, run_query

    settings = _sink_settings(ctx, dsn)
    click.echo(render(run_query(settings.clickhouse, sql), fmt))  # type: ignore[arg-type]


def _actions_settings(ctx: click.Context) -> ActionsSettings:
    return ActionsSettings.load(config_file(ctx))


@click.group()
def actions() -> None:
    """Removal: obligations, capture commands, credit orders and the ledger."""


@actions.command("run")
@click.pass_context
def actions_run(ctx: click.Context) -> None:
    """Run the removal service (one instance: it writes the ledger)."""
    import threading

    from streams.process import stop_on_signals
    from streams.removal.run import run_actions

    stop = threading.Event()
    stop_on_signals(stop)
    stats = run_actions(_actions_settings(ctx), stop)
    click.echo(f"actions stopped: {stats}")


@actions.command("capture-sim")
@click.pass_context
def actions_capture_sim(ctx: click.Context) -> None:
    """Simulate the configured capture units: obey commands, report telemetry."""
    import threading

    from streams.process import stop_on_signals
    from streams.removal.capture_sim import run_capture_sim
    from streams.removal.run import clock_of

    settings = _actions_settings(ctx)
    stop = threading.Event()
    stop_on_signals(stop)
    run_capture_sim(settings, stop, clock_of(settings))


@actions.command("provider-sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 inside a container.")
@click.option("--port", type=int, default=8700, show_default=True)
@click.option("--fail-rate", type=float, default=0.0, help="Share of calls answered 500.")
@click.option("--timeout-rate", type=float, default=0.0, help="Share answered too late.")
@click.option("--wrong-quantity-rate", type=float, default=0.0)
@click.option("--seed", type=int, default=0)
@click.pass_context
def actions_provider_sim(
    ctx: click.Context,
    *,
    host: str,
    port: int,
    fail_rate: float,
    timeout_rate: float,
    wrong_quantity_rate: float,
    seed: int,
) -> None:
    """Serve the simulated credit provider on 127.0.0.1 (with injectable faults)."""
    import threading

    from streams.process import stop_on_signals
    from streams.removal.provider_sim import Faults, SimProvider
    from streams.removal.run import clock_of

    settings = _actions_settings(ctx)
    faults = Faults(fail_rate, timeout_rate, wrong_quantity_rate, seed=seed)
    stop = threading.Event()
    stop_on_signals(stop)
    with SimProvider(
        host=host,
        port=port,
        faults=faults,
        delivery_delay_s=settings.provider_delivery_delay_s,
        clock_ms=clock_of(settings),
    ) as sim:
        click.echo(f"provider-sim on {sim.url}")
        stop.wait()


@click.group()
def ledger() -> None:
    """The hash-chained removal ledger."""


@ledger.command("verify")
@click.option(
    "--from",
    "source",
    type=click.Choice(["clickhouse", "topic"]),
    default="clickhouse",
    show_default=True,
)
@click.option("--dsn", default=None, help="ClickHouse DSN (default from settings).")
@click.option(
    "--head",
    "head_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The head checkpoint the removal service wrote (default: ledger_head if set, else "
    "ledger-head.json beside a chDB store, else under the data home).",
)
@click.option(
    "--no-head",
    is_flag=True,
    help="Check the chain only: order and content, not that its tail is all there.",
)
@click.pass_context
def ledger_verify(
    ctx: click.Context, source: str, dsn: str | None, head_file: Path | None, no_head: bool
) -> None:
    """Recompute the chain and check it ends at its head checkpoint; name the first entry
    that does not fit (exit 1)."""
    from streams.removal.checkpoint import read_head
    from streams.removal.ledger import verify
    from streams.removal.run import head_path, ledger_entries

    clickhouse = _sink_settings(ctx, dsn).clickhouse
    settings = _actions_settings(ctx)
    entries = ledger_entries(
        source,  # type: ignore[arg-type]
        clickhouse=clickhouse,
        settings=settings,
    )
    head, path = None, None
    if not no_head:
        path = head_file or head_path(settings, clickhouse.dsn if source == "clickhouse" else None)
        head = read_head(path)
        if head is None:
            click.echo(
                f"ledger UNPROVEN: no head checkpoint at {path}, so a missing or forged tail "
                "would not show (--head FILE, or --no-head to check the chain only)",
                err=True,
            )
            ctx.exit(1)
    count, broken = verify(entries, head)
    if broken is None:
        ends = f"ends at its head checkpoint ({path})" if path else "tail not checked (--no-head)"
        click.echo(f"ledger OK: {count} entries, chain intact, {ends}")
        return
    click.echo(
        f"ledger BROKEN at seq {broken.seq}"
        + (f" (entry {broken.entry_id})" if broken.entry_id else "")
        + f": {broken.reason}; {count} entries before it verify",
        err=True,
    )
    ctx.exit(1)


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("llcr-report.html"),
    show_default=True,
    help="HTML page (or .png for the image only).",
)
@click.option(
    "--png", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also a PNG."
)
@click.option("--dsn", default=None, help="ClickHouse DSN (default from settings).")
@click.pass_context
def report(ctx: click.Context, out: Path, png: Path | None, dsn: str | None) -> None:
    """Draw emissions vs removals, carbon debt, latency, top jobs and intensity."""
    try:
        from streams.report import write_report
    except ImportError as exc:
        raise LlcrError(
            f"`llcr report` needs matplotlib: pip install 'llcr[report]' ({exc})"
        ) from None
    write_report(_sink_settings(ctx, dsn).clickhouse, out, png)
    click.echo(f"wrote {out}" + (f" and {png}" if png else ""))


@click.command()
@click.option(
    "--by",
    type=click.Choice(["job", "tenant", "zone"]),
    default="job",
    show_default=True,
    help="One row per zone and job (tenant / job), per zone and tenant, or per zone.",
)
@click.option("--since", default=None, help="First day (YYYY-MM-DD, UTC; default: all).")
@click.option("--until", default=None, help="Last day, inclusive (YYYY-MM-DD, UTC).")
@FORMAT_OPTION
@click.option("--dsn", default=None, help="ClickHouse DSN (default from settings).")
@click.pass_context
def compare(
    ctx: click.Context, *, by: str, since: str | None, until: str | None, fmt: str, dsn: str | None
) -> None:
    """Emissions by exact hourly matching against the annual-average method (the zone's
    mean intensity over the year), with the difference in g and %."""
    from streams.report import comparison_sql
    from streams.sink.query import render, run_query

    try:
        sql = comparison_sql(by, since, until)  # type: ignore[arg-type]
    except ValueError as exc:
        hint = "--since/--until"
        raise click.BadParameter(f"{exc} (a day: YYYY-MM-DD)", param_hint=hint) from None
    click.echo(render(run_query(_sink_settings(ctx, dsn).clickhouse, sql), fmt))  # type: ignore[arg-type]


@click.group()
def signals() -> None:
    """Carbon-aware signals: eco tier, intensity context, routing, follow-the-sun."""


@signals.command("run")
@click.pass_context
def signals_run(ctx: click.Context) -> None:
    """Publish eco-tier and context signals; serve the routing and follow-the-sun API."""
    import threading

    from schemas.clock import clock_ms
    from streams.process import stop_on_signals
    from streams.settings import SignalsSettings
    from streams.signals.run import run_signals

    settings = SignalsSettings.load(config_file(ctx))
    stop = threading.Event()
    stop_on_signals(stop)
    run_signals(
        settings, stop, clock_ms(settings.sim_start, settings.sim_speed, settings.sim_anchor_ms)
    )
