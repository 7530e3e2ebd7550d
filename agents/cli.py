"""`llcr agent ...`: commands that run on edge hosts. Imports only `schemas` and `agents`."""

from __future__ import annotations

import json

import click

from agents.settings import GpuAgentSettings, GridFeederSettings
from schemas.cli import config_file
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
