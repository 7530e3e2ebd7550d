"""Typed shapes of the Avro records (TypedDict), one per .avsc.

The .avsc files are the source of truth; ``tests/unit/test_records_match_avsc.py``
fails when a field here and the schema disagree in name, optionality or type.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

SampleSource = Literal["nvml", "sim", "replay"]
EnergyMethod = Literal["counter", "power_integral"]
SampleFlag = Literal[
    "counter_reset",
    "no_energy_counter",
    "power_clamped",
    "clock_skew",
    "partial_interval",
    "shared_gpu",
    "estimated_share",
]
SharingMode = Literal["exclusive", "time_sliced", "mig", "none"]
Signal = Literal["average", "marginal"]
Variant = Literal["direct", "lifecycle"]
IntensityKind = Literal["measured", "estimated", "forecast"]
EmissionStatus = Literal["provisional", "final", "revised"]
CaptureAction = Literal["scale_up", "scale_down", "hold", "stop"]
CaptureState = Literal["running", "ramping", "stopped", "fault"]
RemovalMethod = Literal["dac", "beccs", "biochar", "enhanced_weathering", "mineralisation"]
OrderStatus = Literal["requested", "confirmed", "delivered", "retired", "failed"]
LedgerKind = Literal[
    "emission_hour", "emission_revision", "capture_delivery", "credit_retirement", "allocation"
]
SignalKind = Literal["eco_mode", "intensity_context", "follow_the_sun", "routing_decision"]
EcoMode = Literal["normal", "eco", "unknown"]


class JobShare(TypedDict):
    job_id: str
    tenant: str
    model: NotRequired[str | None]
    share: float
    energy_mj: int
    sharing: SharingMode
    prompt_tokens: NotRequired[int]
    generation_tokens: NotRequired[int]


class GpuSample(TypedDict):
    gpu_uuid: str
    gpu_index: int
    gpu_model: str
    mig_instance: NotRequired[str | None]
    seq: int
    start_ms: int
    end_ms: int
    energy_mj: int
    energy_method: EnergyMethod
    flags: NotRequired[list[SampleFlag]]
    power_w: float
    power_limit_w: float
    utilization_pct: float
    memory_used_bytes: int
    temperature_c: float
    jobs: list[JobShare]


class SampleHeader(TypedDict):
    """The fields v1 batches and v2 blocks share, first in both schemas."""

    batch_id: str
    agent_id: str
    batch_seq: int
    host: str
    site: str
    zone: str
    source: SampleSource
    published_at_ms: int


class GpuSampleBatch(SampleHeader):
    samples: list[GpuSample]


class GpuRef(TypedDict):
    gpu_uuid: str
    gpu_index: int
    gpu_model: str
    mig_instance: NotRequired[str | None]


class JobRef(TypedDict):
    job_id: str
    tenant: str
    model: NotRequired[str | None]
    sharing: SharingMode


class GpuSampleBlock(SampleHeader):
    gpus: list[GpuRef]
    jobs: list[JobRef]
    sample_rows: bytes
    share_rows: bytes


class GridIntensityEvent(TypedDict):
    event_id: str
    zone: str
    period_start_ms: int
    period_end_ms: int
    intensity_g_per_kwh: float
    signal: Signal
    variant: Variant
    provider: str
    kind: IntensityKind
    estimation_method: NotRequired[str | None]
    revision: int
    published_at_ms: int


class SignalEmissions(TypedDict):
    emissions_g: float
    intensity_g_per_kwh: float
    priced_fraction: float
    variant: Variant
    providers: list[str]
    intensity_event_ids: list[str]
    estimated: bool


class EmissionHour(TypedDict):
    record_id: str
    hour_start_ms: int
    host: str
    site: str
    zone: str
    gpu_uuid: str
    gpu_model: str
    job_id: str
    tenant: str
    model: NotRequired[str | None]
    status: EmissionStatus
    revision: int
    energy_mj: int
    energy_kwh: float
    facility_energy_kwh: float
    water_l: float
    embodied_g: float
    coverage: float
    prompt_tokens: NotRequired[int]
    generation_tokens: NotRequired[int]
    average: NotRequired[SignalEmissions | None]
    marginal: NotRequired[SignalEmissions | None]
    computed_at_ms: int


class LiveEmission(TypedDict):
    record_id: str
    hour_start_ms: int
    host: str
    site: str
    zone: str
    gpu_uuid: str
    job_id: str
    tenant: str
    energy_mj: int
    emissions_average_g: NotRequired[float | None]
    emissions_marginal_g: NotRequired[float | None]
    coverage: float
    as_of_ms: int
    computed_at_ms: int


class CaptureCommand(TypedDict):
    command_id: str
    site: str
    unit_id: str
    hour_start_ms: int
    action: CaptureAction
    target_rate_g_per_h: float
    expected_capture_g: float
    expected_parasitic_g: float
    intensity_g_per_kwh: float
    reason: str
    issued_at_ms: int


class CaptureTelemetry(TypedDict):
    telemetry_id: str
    unit_id: str
    site: str
    command_id: NotRequired[str | None]
    period_start_ms: int
    period_end_ms: int
    captured_g: float
    electric_kwh: float
    thermal_kwh: float
    rate_g_per_h: float
    state: CaptureState
    reported_at_ms: int


class RemovalOrder(TypedDict):
    order_id: str
    idempotency_key: str
    scope: str
    method: RemovalMethod
    quantity_g: int
    status: OrderStatus
    provider: str
    provider_order_id: NotRequired[str | None]
    serial_numbers: NotRequired[list[str]]
    retired_at_ms: NotRequired[int | None]
    sequestered_at_ms: NotRequired[int | None]
    deadline_ms: int
    hour_starts_ms: NotRequired[list[int]]
    price_per_t: NotRequired[float | None]
    currency: NotRequired[str | None]
    reason: NotRequired[str | None]
    version: int
    updated_at_ms: int


class LedgerEntry(TypedDict):
    seq: int
    chain_id: NotRequired[str]
    entry_id: str
    kind: LedgerKind
    scope: str
    hour_start_ms: NotRequired[int | None]
    quantity_g: float
    ref_id: str
    payload_json: str
    recorded_at_ms: int
    prev_hash: str
    hash: str


class CarbonSignal(TypedDict):
    signal_id: str
    kind: SignalKind
    zone: NotRequired[str | None]
    mode: NotRequired[EcoMode | None]
    intensity_g_per_kwh: NotRequired[float | None]
    percentile: NotRequired[float | None]
    reason: str
    valid_from_ms: int
    valid_until_ms: NotRequired[int | None]
    payload_json: NotRequired[str]
    issued_at_ms: int


class DeadLetter(TypedDict):
    dead_letter_id: str
    component: str
    source_topic: NotRequired[str | None]
    source_partition: NotRequired[int | None]
    source_offset: NotRequired[int | None]
    reason_code: str
    reason: str
    key: NotRequired[bytes | None]
    value: bytes
    failed_at_ms: int


RECORD_TYPES: dict[str, type] = {
    "gpu_sample_batch": GpuSampleBatch,
    "gpu_sample_block": GpuSampleBlock,
    "grid_intensity": GridIntensityEvent,
    "emissions_hourly": EmissionHour,
    "emissions_live": LiveEmission,
    "capture_command": CaptureCommand,
    "capture_telemetry": CaptureTelemetry,
    "removal_order": RemovalOrder,
    "ledger_entry": LedgerEntry,
    "carbon_signal": CarbonSignal,
    "dead_letter": DeadLetter,
}
