"""What the removal service counted (logged at stop, asserted by tests)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ActionStats:
    records: int = 0
    telemetry: int = 0
    ledger_entries: int = 0
    commands: int = 0
    orders_created: int = 0
    orders_retired: int = 0
    orders_failed: int = 0
    provider_errors: int = 0
    dead_letters: int = 0
