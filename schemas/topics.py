"""The topic catalogue: every topic's name, key, schema, partitions and retention, in one place.

Topics are pre-created (``llcr topics create``) with explicit partitions and configs;
nothing relies on broker auto-creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.codec import SchemaName
from schemas.units import HOUR_MS

TopicKey = Literal[
    "samples",
    "intensity",
    "emissions_hourly",
    "emissions_live",
    "capture_commands",
    "capture_telemetry",
    "removal_orders",
    "ledger",
    "signals",
    "dead_letters",
]

_DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the product."""

    key: TopicKey
    suffix: str
    schema: SchemaName
    partitions: int
    retention_ms: int  # -1: keep forever
    message_key: str
    doc: str
    cleanup_policy: Literal["delete", "compact"] = "delete"
    retention_bytes: int = -1
    #: records its messages may also be written as; ``schema`` reads them all (codec
    #: conversions), so a reader decodes every message as ``schema``
    also_written_as: tuple[SchemaName, ...] = ()

    def name(self, prefix: str) -> str:
        return f"{prefix}{self.suffix}"

    def configs(self) -> dict[str, str]:
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
        }


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(
        "samples",
        "gpu.samples",
        "gpu_sample_batch",
        8,
        7 * _DAY_MS,
        "host",
        "Per-host batches of per-GPU energy samples, from `llcr agent gpu`: columnar "
        "blocks (llcr.v2) from this release's agents, per-sample batches (llcr.v1) from "
        "older ones; readers take both.",
        also_written_as=("gpu_sample_block",),
    ),
    TopicSpec(
        "intensity",
        "grid.intensity",
        "grid_intensity",
        4,
        90 * _DAY_MS,
        "zone",
        "Grid carbon-intensity events per zone and period, every revision kept.",
    ),
    TopicSpec(
        "emissions_hourly",
        "emissions.hourly",
        "emissions_hourly",
        8,
        -1,
        "record_id",
        "Final and revised hourly emissions per host, GPU and job.",
    ),
    TopicSpec(
        "emissions_live",
        "emissions.live",
        "emissions_live",
        8,
        _DAY_MS,
        "record_id",
        "Provisional running totals of open hours (replaced every few seconds).",
    ),
    TopicSpec(
        "capture_commands",
        "capture.commands",
        "capture_command",
        4,
        30 * _DAY_MS,
        "unit_id",
        "Scale commands for on-site capture units.",
    ),
    TopicSpec(
        "capture_telemetry",
        "capture.telemetry",
        "capture_telemetry",
        4,
        -1,
        "unit_id",
        "What capture units actually captured; the only capture that counts as removal.",
    ),
    TopicSpec(
        "removal_orders",
        "removal.orders",
        "removal_order",
        4,
        -1,
        "order_id",
        "State changes of permanent-removal credit orders.",
    ),
    TopicSpec(
        "ledger",
        "ledger",
        "ledger_entry",
        1,
        -1,
        "scope",
        "The hash-chained removal ledger; one partition for one total order.",
    ),
    TopicSpec(
        "signals",
        "signals",
        "carbon_signal",
        4,
        30 * _DAY_MS,
        "zone",
        "Eco-tier modes, intensity context, follow-the-sun and routing decisions.",
    ),
    TopicSpec(
        "dead_letters",
        "deadletters",
        "dead_letter",
        4,
        30 * _DAY_MS,
        "component",
        "Rejected input with the reason and the original bytes.",
    ),
)

DEFAULT_PREFIX = "llcr."


def spec(key: TopicKey) -> TopicSpec:
    for entry in CATALOGUE:
        if entry.key == key:
            return entry
    raise KeyError(key)


@dataclass(frozen=True)
class Topics:
    """Topic names for one prefix: ``Topics("t.").name("samples") == "t.gpu.samples"``."""

    prefix: str = DEFAULT_PREFIX

    def name(self, key: TopicKey) -> str:
        return spec(key).name(self.prefix)

    def all(self) -> dict[TopicKey, str]:
        return {entry.key: entry.name(self.prefix) for entry in CATALOGUE}
