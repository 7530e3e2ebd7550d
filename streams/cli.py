"""Stream-side commands: `llcr migrate`, `llcr worker`, `llcr sink`, `llcr query`."""

from __future__ import annotations

import click

from schemas.cli import config_file
from streams.settings import SinkSettings, WorkerSettings
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


@click.command()
@click.argument("sql")
@click.option("--dsn", default=None, help="ClickHouse DSN (default from settings).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.pass_context
def query(ctx: click.Context, sql: str, dsn: str | None, fmt: str) -> None:
    """Run SQL against the store (through the running sink when it owns chDB)."""
    from streams.sink.query import render, run_query

    settings = _sink_settings(ctx, dsn)
    click.echo(render(run_query(settings.clickhouse, sql), fmt))  # type: ignore[arg-type]
