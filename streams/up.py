"""`llcr up`: the whole pipeline on one machine, on its embedded default.

Starts a Tansu broker and chDB, creates every topic and table, then keeps them running
until Ctrl-C or --duration. Processes of later stages (agents, workers, sink, actions)
are started from here as they land, each as its own process, exactly as in production.
The chDB directory stays behind for `llcr query` and `llcr report`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import click

from schemas.admin import create_topics
from schemas.settings import KafkaSettings
from streams.embedded.broker import Broker
from streams.settings import ClickHouseSettings
from streams.store.client import connect
from streams.store.migrations import apply_migrations

logger = logging.getLogger(__name__)


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
def up(data_dir: Path, duration: float | None, port: int | None) -> None:
    """Run the whole pipeline on this machine (embedded broker + chDB)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    _on_signals(stop)
    started = time.monotonic()
    with Broker(port=port, log_path=data_dir / "broker.log") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        results = create_topics(kafka.librdkafka(), kafka.topic_prefix)
        clickhouse = ClickHouseSettings(dsn=f"chdb:{data_dir / 'chdb'}")
        client = connect(clickhouse)
        try:
            applied = apply_migrations(client, clickhouse.database)
            click.echo(f"broker    {broker.bootstrap} (Tansu, in memory)")
            click.echo(f"topics    {len(results)} ready ({kafka.topic_prefix}*)")
            click.echo(
                f"chdb      {(data_dir / 'chdb').resolve()} ({len(applied)} migration(s) applied)"
            )
            click.echo(f"ready in  {time.monotonic() - started:.1f}s; Ctrl-C stops")
            stop.wait(duration)
        finally:
            client.close()
    click.echo("stopped; chDB data kept in " + str((data_dir / "chdb").resolve()))


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %s: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
