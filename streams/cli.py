"""Stream-side commands: `llcr migrate` (and, as they land, worker, sink, query)."""

from __future__ import annotations

import click

from schemas.cli import config_file
from streams.settings import SinkSettings
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
