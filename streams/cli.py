"""Stream-side commands: `llcr migrate`, `llcr worker` (and, as they land, sink, query)."""

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
    settings = SinkSettings.load(config_file(ctx))
    clickhouse = (
        settings.clickhouse if dsn is None else settings.clickhouse.model_copy(update={"dsn": dsn})
    )
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
