"""Running the removal processes, and verifying the ledger."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from schemas.clock import clock_ms
from schemas.codec import make_codec
from schemas.topics import spec
from streams.removal.provider import CreditProvider
from streams.removal.service import Actions
from streams.removal.stats import ActionStats
from streams.settings import HEAD_FILE, ActionsSettings, ClickHouseSettings
from streams.store.client import embedded_dir, is_embedded
from streams.topic_reader import check_reachable, read_to_end

logger = logging.getLogger(__name__)

LEDGER_SQL = (
    "SELECT seq, chain_id, entry_id, kind, scope, "
    "toUnixTimestamp64Milli(hour_start) AS hour_start_ms, quantity_g, ref_id, payload_json, "
    "toUnixTimestamp64Milli(recorded_at) AS recorded_at_ms, prev_hash, hash "
    # no FINAL: a fork (two entries at one seq) must be seen, not collapsed away
    "FROM {database}.ledger ORDER BY chain_id, seq, hash"
)


def clock_of(settings: ActionsSettings) -> Callable[[], int]:
    """Epoch ms of the configured clock: simulated (``sim_start``) or the wall clock."""
    return clock_ms(settings.sim_start, settings.sim_speed, settings.sim_anchor_ms)


def run_actions(settings: ActionsSettings, stop: threading.Event) -> ActionStats:
    provider = CreditProvider(
        settings.provider_url,
        token=settings.provider_token.get_secret_value(),
        timeout_s=settings.provider_timeout_s,
        name=settings.provider_name,
    )
    actions = Actions(settings, provider=provider, clock_ms=clock_of(settings))
    try:
        actions.run(stop)
    finally:
        provider.close()
        logger.info("actions stopped: %s", actions.stats)
    return actions.stats


def head_path(settings: ActionsSettings, dsn: str | None) -> Path:
    """Where the head checkpoint of the ledger in ``dsn`` is: ``ledger_head`` when it was
    set, else beside a chDB store (where `llcr up` and the defaults put it), else the
    default under the data home."""
    if "ledger_head" in settings.model_fields_set or dsn is None or not is_embedded(dsn):
        return settings.ledger_head
    return embedded_dir(dsn).resolve().parent / HEAD_FILE


def ledger_entries(
    source: Literal["clickhouse", "topic"],
    *,
    clickhouse: ClickHouseSettings,
    settings: ActionsSettings,
) -> Iterable[Mapping[str, Any]]:
    """The ledger in ``seq`` order, from ClickHouse (what analysts see) or the topic."""
    if source == "clickhouse":
        from streams.sink.query import run_query

        result = run_query(clickhouse, LEDGER_SQL.format(database=clickhouse.database))
        return [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    codec = make_codec(settings.kafka.framing, settings.kafka.registry_ids)
    check_reachable(settings.kafka.librdkafka())
    messages = read_to_end(
        settings.kafka.librdkafka(), settings.kafka.topics.name("ledger"), spec("ledger").partitions
    )
    return [codec.decode("ledger_entry", m.value()) for m in messages]
