"""Settings of the stream-side deployables: processors (worker) and the ClickHouse sink."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr

from schemas.bounds import DEVICE_POWER_W, Bounds
from schemas.paths import data_home, default_dsn
from schemas.settings import LlcrSettings

SampleSourceName = Literal["nvml", "replay", "sim"]
_REAL_SOURCES: tuple[SampleSourceName, ...] = ("nvml", "replay")


# the removal service's head checkpoint, beside the store (streams.removal.checkpoint)
HEAD_FILE = "ledger-head.json"


class CaptureUnitConfig(BaseModel):
    """One on-site capture unit (a site may have one; its id names it on the topics)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit_id: str
    capacity_kg_per_h: float = Field(gt=0)
    thermal_kwh_per_t: float = Field(gt=0, description="Heat needed per tCO2 captured.")
    electric_kwh_per_t: float = Field(ge=0, description="Electricity needed per tCO2.")
    recoverable_heat_fraction: float = Field(default=0.6, ge=0, le=1)
    min_net_g: float = Field(default=100.0, ge=0, description="Run only above this net.")
    min_run_h: float = Field(default=1.0, ge=0)
    ramp_kg_per_h_per_h: float = Field(default=1e9, gt=0)


class ClickHouseSettings(BaseModel):
    """Where analytics live: ``chdb:///abs/dir`` or ``chdb:rel/dir`` (embedded), or
    ``http(s)://host:port`` (a ClickHouse server)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str = Field(
        default_factory=default_dsn,
        description="Default: chdb:<LLCR_HOME or ~/.local/share/llcr>/chdb (absolute).",
    )
    database: str = "llcr"
    username: str = "default"
    password: SecretStr = SecretStr("")
    connect_timeout_s: float = 10.0
    raw_sample_ttl_days: int = Field(default=30, ge=1)
    # the local query endpoint (chDB): fixed on its read-only session, not changeable by SQL
    query_max_execution_s: float = Field(default=10.0, gt=0, le=3600)
    query_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    query_max_result_rows: int = Field(default=1_000_000, ge=1)


class BoundsSettings(BaseModel):
    """What a physically possible sample is (schemas/bounds.py); the worker and the sink
    read the same ones (env ``LLCR_BOUNDS__...``)."""

    max_sample_interval_s: float = Field(
        default=3600.0, gt=0, le=24 * 3600, description="Longest sample interval accepted."
    )
    device_power_w: dict[str, float] = Field(
        default_factory=dict,
        description="Most board power by model name part, W (adds to and overrides the "
        "built-in table in schemas/bounds.py); samples above 2x it are dead-lettered.",
    )
    default_device_power_w: float = Field(
        default=1000.0, gt=0, description="Most board power of a model not in the table, W."
    )

    def to_bounds(self) -> Bounds:
        return Bounds(
            max_interval_ms=int(self.max_sample_interval_s * 1000),
            default_power_w=self.default_device_power_w,
            device_power_w={**DEVICE_POWER_W, **self.device_power_w},
        )


class WorkerSettings(LlcrSettings):
    """`llcr worker`: the faust matching processors."""

    app_id: str = "llcr-worker"
    store: str = "memory://"
    data_dir: Path = Field(default_factory=lambda: data_home() / "worker")
    processing_guarantee: Literal["at_least_once"] = "at_least_once"
    # Tansu holds a group join for session_timeout / 2; these keep a worker ready in seconds
    # (see docs/operations.md). Production Kafka works with them too.
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    rebalance_timeout_s: float = 6.0
    topic_partitions: int = 8
    # matching
    zones: list[str] = Field(
        default_factory=list, description="Known grid zones; empty: any zone is accepted."
    )
    average_variant: Literal["direct", "lifecycle"] = "lifecycle"
    max_intensity_g_per_kwh: float = Field(
        default=2000.0, gt=0, description="Intensity above this is dead-lettered, never priced."
    )
    max_intensity_period_h: float = Field(
        default=24.0, gt=0, description="Longest intensity period accepted."
    )
    bounds: BoundsSettings = Field(default_factory=BoundsSettings)
    sim_start: str | None = Field(
        default=None, description="The simulated clock `up` runs on (sample time checks)."
    )
    sim_speed: float = Field(default=1.0, gt=0)
    sim_anchor_ms: int | None = None
    producer_max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest record or state slice the worker sends (what its bounds keep "
        "every slice under).",
    )
    accept_sources: list[SampleSourceName] = Field(
        default_factory=lambda: list(_REAL_SOURCES),
        description="Sample sources priced; others are dead-lettered (sim only for demos).",
    )
    pue: dict[str, float] = Field(default_factory=dict, description="PUE by site.")
    wue_l_per_kwh: dict[str, float] = Field(default_factory=dict, description="WUE by site.")
    default_pue: float = Field(default=1.2, ge=1.0)
    default_wue_l_per_kwh: float = Field(default=0.5, ge=0.0)
    embodied_g_per_gpu_hour: dict[str, float] = Field(
        default_factory=dict, description="Embodied gCO2e per GPU-hour by GPU model name part."
    )
    grace_s: float = Field(default=300.0, ge=0, description="Event-time grace after hour end.")
    max_wait_s: float = Field(
        default=900.0, ge=0, description="Close an hour on the clock this long after its end."
    )
    live_every_s: float = Field(default=5.0, gt=0)
    retention_h: float = Field(default=72.0, gt=0, description="How long closed hours can change.")
    unpriced_retention_h: float = Field(
        default=72.0,
        gt=0,
        description="A closed hour with unpriced energy stays at least this long, so the "
        "price that comes late revises it (whatever retention_h says).",
    )
    max_sample_age_h: float | None = Field(
        default=None, description="Refuse samples older than this (None: replays of any age)."
    )
    tick_s: float = Field(default=1.0, gt=0)
    price_catchup_s: float = Field(
        default=30.0,
        ge=0,
        description="At start, close no hour before the intensity backlog is read (max s).",
    )
    fetch_max_wait_s: float = Field(
        default=1.5,
        gt=0,
        le=30,
        description=(
            "Longest wait of one fetch for new records (faust's fixed value by default). "
            "Tansu answers a waiting fetch when the wait ends, not when records arrive; "
            "shorter waits cut latency there but cost the broker CPU (docs/benchmarks.md)."
        ),
    )
    batch_max_messages: int = Field(default=2000, ge=1)
    batch_within_s: float = Field(default=0.2, gt=0)
    batch_max_samples: int = Field(
        default=65_536,
        ge=1,
        description="A batch is applied and written in parts of at most this many samples.",
    )


class SinkSettings(LlcrSettings):
    """`llcr sink`: every topic into ClickHouse."""

    group_id: str = "llcr-sink"
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    batch_max_rows: int = Field(default=50_000, ge=1)
    batch_max_wait_s: float = Field(default=1.0, gt=0)
    poll_max_messages: int = Field(default=1000, ge=1)
    max_backoff_s: float = Field(default=30.0, gt=0, description="Cap of the insert backoff.")
    bounds: BoundsSettings = Field(default_factory=BoundsSettings)
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    query_endpoint: bool = Field(
        default=True,
        description="With chDB, serve `llcr query` on 127.0.0.1 (the sink owns the directory).",
    )
    metrics_port: int | None = Field(default=None, description="Prometheus endpoint port.")


class ActionsSettings(LlcrSettings):
    """`llcr actions`: removal obligations, capture commands, credit orders, the ledger."""

    group_id: str = "llcr-actions"
    scope_mode: Literal["tenant", "site"] = "tenant"
    buffer: float = Field(default=0.1, ge=0, le=1, description="Reversal-risk buffer.")
    include_embodied: bool = False
    latency_target_h: float = Field(default=24.0, gt=0)
    max_record_g: float = Field(default=1e9, gt=0)
    unpriced_g_per_kwh: float = Field(
        default=1200.0,
        gt=0,
        description="What energy no intensity priced is owed at until its price arrives "
        "(conservative: above a grid run on lignite alone); never 0.",
    )
    unpriced_zone_g_per_kwh: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="The same, per zone (g/kWh > 0)."
    )
    capture_units: dict[str, CaptureUnitConfig] = Field(
        default_factory=dict, description="On-site capture unit by site."
    )
    capture_window_h: float = Field(
        default=1.0, gt=0, description="Plan capture for an hour at most this long after it."
    )
    plan_quiet_s: float = Field(
        default=2.0, ge=0, description="Plan a site-hour once no record came for this long."
    )
    method: str = "dac"
    provider_url: str = "http://127.0.0.1:8700"
    provider_name: str = "sim"
    provider_token: SecretStr = SecretStr("")
    provider_timeout_s: float = Field(default=3.0, gt=0)
    min_lot_g: int = Field(default=1000, ge=1, description="Smallest credit order.")
    order_lead_h: float = Field(
        default=2.0, ge=0, description="Order this long before an hour's latency deadline."
    )
    poll_every_s: float = Field(default=1.0, gt=0)
    tick_s: float = Field(default=0.5, gt=0)
    sim_start: str | None = Field(
        default=None, description="Simulated clock start (ISO); None: the wall clock."
    )
    sim_speed: float = Field(default=1.0, gt=0)
    sim_anchor_ms: int | None = Field(
        default=None, description="Wall epoch ms at which the simulated clock reads sim_start."
    )
    provider_delivery_delay_s: float = Field(
        default=600.0, ge=0, description="provider-sim: delivery delay on its clock."
    )
    ledger_head: Path = Field(
        default_factory=lambda: data_home() / HEAD_FILE,
        description="The ledger's head checkpoint (keep it beside the store, away from "
        "the sink): rewritten after every publish, read by `llcr ledger verify`.",
    )


class SignalsSettings(LlcrSettings):
    """`llcr signals run`: eco tier, intensity context, routing and follow-the-sun API."""

    group_id: str = "llcr-signals"
    variant: Literal["direct", "lifecycle"] = "lifecycle"
    window_h: int = Field(default=336, ge=24, description="Rolling percentile window.")
    enter_pct: float = Field(default=70.0, ge=0, le=100)
    leave_pct: float = Field(default=55.0, ge=0, le=100)
    enter_g: float | None = None
    leave_g: float | None = None
    min_dwell_h: float = Field(default=3.0, ge=0)
    min_history_h: int = Field(default=24, ge=1)
    stale_after_h: float = Field(default=3.0, gt=0)
    api_host: str = "127.0.0.1"
    api_port: int = 8710
    # the work one API request may ask for, checked before it touches the shared state
    max_request_zones: int = Field(default=64, ge=1, description="Zones per request.")
    max_horizon_h: int = Field(
        default=24 * 14, ge=1, description="follow-the-sun: deadline - earliest start."
    )
    max_route_candidates: int = Field(default=1000, ge=1, description="Candidates per route.")
    sim_start: str | None = None
    sim_speed: float = Field(default=1.0, gt=0)
    sim_anchor_ms: int | None = None
