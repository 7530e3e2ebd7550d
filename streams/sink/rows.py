"""Decoded records -> ClickHouse rows, one mapping per topic (pure, no I/O).

Every mapping lists its table's columns in insert order and turns one record into zero or
more rows (a sample batch becomes one row per sample). Times stay integer milliseconds:
clickhouse-connect writes an int into a ``DateTime64(3)`` column as epoch milliseconds.
``ingested_at`` is left to the table's default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from schemas.bounds import (
    Bounds,
    BoundsError,
    check_batch_header,
    check_event_fields,
    sample_problem,
)
from schemas.codec import SchemaName
from schemas.records import (
    CaptureCommand,
    CaptureTelemetry,
    CarbonSignal,
    DeadLetter,
    GpuSample,
    GpuSampleBatch,
    GridIntensityEvent,
    LedgerEntry,
    LiveEmission,
    RemovalOrder,
)
from schemas.topics import TopicKey
from streams.sink.blocks import SampleBlocks, block_sample_rows
from streams.sink.shapes import Rejected, Row

__all__ = ["Rejected", "Row"]  # and the names below; sink.py imports these two from here


@dataclass(frozen=True)
class TableMap:
    """How one topic lands: its table, columns and the rows of one record (a
    :class:`Rejected` row lands in ``rejected_table``, with ``reason_code`` and ``reason``)."""

    topic: TopicKey
    table: str
    columns: tuple[str, ...]
    rows: Callable[[Mapping[str, Any]], Iterator[Row]]
    rejected_table: str | None = None
    rejected_columns: tuple[str, ...] = ()
    # a whole record outside the bounds: a dead letter with this error's code, no rows
    check: Callable[[Mapping[str, Any]], None] | None = None
    # the sink appends the message's partition and offset (SOURCE_COLUMNS) to each row
    adds_source: bool = False
    # the record ``rows`` takes, when not the topic's schema (the codec converts)
    reads: SchemaName | None = None
    # rows kept as arrays for one Arrow insert: a new accumulator for each batch, which
    # takes each record (``add(record, source) -> rejected rows``) instead of ``rows``
    blocks: Callable[[], SampleBlocks] | None = None


def batch_sample_rows(batch: Mapping[str, Any], bounds: Bounds) -> Iterator[Row]:
    """One row per sample of a v1 batch; a sample outside ``bounds`` is a
    :class:`Rejected` row, so it is never summed with the good ones (the worker refuses it
    the same way). The sink maps blocks (:mod:`streams.sink.blocks`); this is the
    readable reference the columnar mapping is tested against."""
    header: BoundsError | None = None
    try:
        check_batch_header(cast(GpuSampleBatch, batch), bounds)
    except BoundsError as exc:
        header = exc
    for s, row in zip(batch["samples"], _plain_sample_rows(batch), strict=True):
        problem = header or sample_problem(cast(GpuSample, s), bounds)
        if problem is None:
            yield row
        else:
            whole = json.dumps(s, sort_keys=True, default=str)
            kept = (batch["host"], s["gpu_uuid"], s["seq"], batch["batch_id"], whole)
            yield Rejected(kept, problem.code, str(problem))


def _plain_sample_rows(batch: Mapping[str, Any]) -> Iterator[Row]:
    head = (
        batch["host"],
        batch["site"],
        batch["zone"],
        batch["agent_id"],
        batch["source"],
        batch["batch_id"],
    )
    for s in batch["samples"]:
        jobs = s["jobs"]
        yield (
            *head,
            s["gpu_uuid"],
            s["gpu_index"],
            s["gpu_model"],
            s.get("mig_instance") or "",
            s["seq"],
            s["start_ms"],
            s["end_ms"],
            s["energy_mj"],
            s["energy_method"],
            s.get("flags") or [],
            s["power_w"],
            s["power_limit_w"],
            s["utilization_pct"],
            s["memory_used_bytes"],
            s["temperature_c"],
            [j["job_id"] for j in jobs],
            [j["tenant"] for j in jobs],
            [j.get("model") or "" for j in jobs],
            [j["share"] for j in jobs],
            [j["energy_mj"] for j in jobs],
            [j.get("prompt_tokens", 0) for j in jobs],
            [j.get("generation_tokens", 0) for j in jobs],
            batch["published_at_ms"],
        )


SAMPLE_COLUMNS = (
    "host",
    "site",
    "zone",
    "agent_id",
    "source",
    "batch_id",
    "gpu_uuid",
    "gpu_index",
    "gpu_model",
    "mig_instance",
    "seq",
    "start",
    "end",
    "energy_mj",
    "energy_method",
    "flags",
    "power_w",
    "power_limit_w",
    "utilization_pct",
    "memory_used_bytes",
    "temperature_c",
    "job_ids",
    "job_tenants",
    "job_models",
    "job_shares",
    "job_energy_mj",
    "job_prompt_tokens",
    "job_generation_tokens",
    "published_at",
)
SOURCE_COLUMNS = ("source_partition", "source_offset")  # the message a sample row came from
REJECTED_SAMPLE_COLUMNS = (
    "host",
    "gpu_uuid",
    "seq",
    "batch_id",
    "sample_json",
    *SOURCE_COLUMNS,
    "reason_code",
    "reason",
)

EMISSION_COLUMNS = (
    "record_id",
    "hour_start",
    "host",
    "site",
    "zone",
    "gpu_uuid",
    "gpu_model",
    "job_id",
    "tenant",
    "model",
    "status",
    "revision",
    "energy_mj",
    "energy_kwh",
    "facility_energy_kwh",
    "water_l",
    "embodied_g",
    "coverage",
    "prompt_tokens",
    "generation_tokens",
    "emissions_average_g",
    "intensity_average_g_per_kwh",
    "priced_fraction_average",
    "variant_average",
    "providers_average",
    "intensity_events_average",
    "estimated_average",
    "emissions_marginal_g",
    "intensity_marginal_g_per_kwh",
    "priced_fraction_marginal",
    "variant_marginal",
    "providers_marginal",
    "intensity_events_marginal",
    "estimated_marginal",
    "computed_at",
)


def _signal(priced: Mapping[str, Any] | None) -> Row:
    if priced is None:
        return (None, None, None, None, [], [], None)
    return (
        priced["emissions_g"],
        priced["intensity_g_per_kwh"],
        priced["priced_fraction"],
        priced["variant"],
        priced["providers"],
        priced["intensity_event_ids"],
        priced["estimated"],
    )


def _emission_rows(r: Mapping[str, Any]) -> Iterator[Row]:
    yield (
        r["record_id"],
        r["hour_start_ms"],
        r["host"],
        r["site"],
        r["zone"],
        r["gpu_uuid"],
        r["gpu_model"],
        r["job_id"],
        r["tenant"],
        r.get("model") or "",
        r["status"],
        r["revision"],
        r["energy_mj"],
        r["energy_kwh"],
        r["facility_energy_kwh"],
        r["water_l"],
        r["embodied_g"],
        r["coverage"],
        r.get("prompt_tokens", 0),
        r.get("generation_tokens", 0),
        *_signal(r.get("average")),
        *_signal(r.get("marginal")),
        r["computed_at_ms"],
    )


def _fields(*names: str) -> Callable[[Mapping[str, Any]], Iterator[Row]]:
    """Rows that are the record's fields in order (``*_ms`` fields feed DateTime64)."""

    def rows(record: Mapping[str, Any]) -> Iterator[Row]:
        yield tuple(record.get(name) for name in names)

    return rows


def _columns(*names: str) -> tuple[str, ...]:
    return tuple(name.removesuffix("_ms") for name in names)


def _simple(topic: TopicKey, table: str, *fields: str) -> TableMap:
    return TableMap(topic, table, _columns(*fields), _fields(*fields))


def fields_of(record_type: type) -> tuple[str, ...]:
    """A record's field names in schema order (the TypedDicts follow the .avsc files, and
    tests/unit/test_records_match_avsc.py keeps them so)."""
    return tuple(record_type.__annotations__)


_INTENSITY = fields_of(GridIntensityEvent)
_LIVE = fields_of(LiveEmission)
_COMMAND = fields_of(CaptureCommand)
_TELEMETRY = fields_of(CaptureTelemetry)
_ORDER = fields_of(RemovalOrder)
_LEDGER = fields_of(LedgerEntry)
_SIGNAL = fields_of(CarbonSignal)
_DEAD = fields_of(DeadLetter)


def _dead_rows(r: Mapping[str, Any]) -> Iterator[Row]:
    """Dead letters keep their original bytes; stored as text (bytes decoded leniently)."""
    key, value = r.get("key"), r["value"]
    row = dict(r)
    row["key"] = None if key is None else key.decode("utf-8", "backslashreplace")
    row["value"] = value.decode("utf-8", "backslashreplace")
    yield tuple(row.get(name) for name in _DEAD)


def _check_intensity(event: Mapping[str, Any]) -> None:
    """What the worker refuses before pricing, the sink refuses before storing: sizes,
    ranges (a revision of -1 cannot be stored, and once cost an insert per row) and a
    value no grid can have."""
    check_event_fields(cast(GridIntensityEvent, event), _DEFAULT_BOUNDS)
    value = event["intensity_g_per_kwh"]
    if not (math.isfinite(value) and value >= 0):
        raise BoundsError("intensity_not_physical", f"intensity {value} g/kWh")


_DEFAULT_BOUNDS = Bounds()


def sample_map(bounds: Bounds) -> TableMap:
    """Samples land in gpu_samples, those outside ``bounds`` in gpu_samples_rejected.
    Every message is read as a columnar block (a v1 batch is converted by the codec)."""
    return TableMap(
        "samples",
        "gpu_samples",
        SAMPLE_COLUMNS + SOURCE_COLUMNS,
        partial(block_sample_rows, bounds=bounds),
        rejected_table="gpu_samples_rejected",
        rejected_columns=REJECTED_SAMPLE_COLUMNS,
        adds_source=True,
        reads="gpu_sample_block",
        blocks=partial(SampleBlocks, bounds),
    )


TABLES: dict[TopicKey, TableMap] = {
    m.topic: m
    for m in (
        sample_map(Bounds()),
        TableMap(
            "intensity",
            "grid_intensity",
            _columns(*_INTENSITY),
            _fields(*_INTENSITY),
            check=_check_intensity,
        ),
        TableMap("emissions_hourly", "emissions_hourly", EMISSION_COLUMNS, _emission_rows),
        _simple("emissions_live", "emissions_live", *_LIVE),
        _simple("capture_commands", "capture_commands", *_COMMAND),
        _simple("capture_telemetry", "capture_telemetry", *_TELEMETRY),
        _simple("removal_orders", "removal_orders", *_ORDER),
        _simple("ledger", "ledger", *_LEDGER),
        _simple("signals", "signals", *_SIGNAL),
        TableMap("dead_letters", "dead_letters", _columns(*_DEAD), _dead_rows),
    )
}
