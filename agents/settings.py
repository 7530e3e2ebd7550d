"""Settings of the edge deployables: the GPU agent and the grid feeder."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from schemas.paths import data_home
from schemas.settings import LlcrSettings
from schemas.zones import canonical_zone, check_site, check_zone


class GpuAgentSettings(LlcrSettings):
    """`llcr agent gpu`: one per GPU host."""

    host: str = Field(default_factory=socket.gethostname)
    agent_id: str | None = Field(default=None, description="Default: the host name.")
    # No defaults: a forgotten zone must not price a fleet with another grid's intensity.
    site: str = Field(description="Data-centre site (PUE, WUE, capture units). Env: LLCR_SITE.")
    zone: str = Field(
        description="Electricity Maps zone id whose intensity prices this host. Env: LLCR_ZONE."
    )
    extra_zones: list[str] = Field(
        default_factory=list, description="Zone ids to accept beyond schemas.zones.KNOWN_ZONES."
    )
    # Real readings unless a simulation is asked for by name: NVML missing is an error.
    source: Literal["nvml", "sim", "replay"] = "nvml"
    sample_interval_s: float = Field(default=1.0, gt=0)
    publish_interval_s: float = Field(default=1.0, gt=0)
    sample_format: Literal["block", "batch"] = Field(
        default="block",
        description=(
            "block: columnar llcr.v2.GpuSampleBlock (this release's readers take both); "
            "batch: per-sample llcr.v1.GpuSampleBatch, while readers older than this "
            "release still consume gpu.samples."
        ),
    )
    spool_dir: Path = Field(default_factory=lambda: data_home() / "spool")
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    queue_max_batches: int = Field(default=1000, ge=1)
    metrics_port: int | None = Field(
        default=None, description="Prometheus endpoint port; off when unset."
    )
    metrics_addr: str = "0.0.0.0"
    replay_file: Path | None = Field(default=None, description="Trace for source = replay.")
    replay_speed: float = Field(
        default=1.0, ge=0, description="Trace seconds per wall second; 0 = as fast as possible."
    )
    replay_utc_offset_min: int = Field(
        default=0, description="Zone of naive trace timestamps (nvidia-smi prints local time)."
    )
    inference_metrics_url: str | None = Field(
        default=None, description="vLLM/TGI Prometheus endpoint to take token counters from."
    )
    prompt_tokens_metric: str = "vllm:prompt_tokens_total"
    generation_tokens_metric: str = "vllm:generation_tokens_total"
    tokens_job: str | None = Field(
        default=None, description="Job the tokens belong to (default: job, else the busiest)."
    )
    job: str | None = Field(default=None, description="Job label for all GPU energy (LLCR_JOB).")
    tenant: str | None = None
    model: str | None = None

    @field_validator("zone", mode="before")
    @classmethod
    def _zone_of_alias(cls, value: object) -> object:
        """A WattTime region or EIA balancing authority: the zone it names."""
        return canonical_zone(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known_zone_and_site(self) -> Self:
        check_zone(self.zone, self.extra_zones)
        check_site(self.site)
        return self


ProviderName = Literal["electricitymaps", "watttime", "neso", "static"]
DEFAULT_AVERAGE_CHAIN: tuple[ProviderName, ...] = ("electricitymaps", "watttime", "neso", "static")
DEFAULT_MARGINAL_CHAIN: tuple[ProviderName, ...] = ("watttime",)


class GridFeederSettings(LlcrSettings):
    """`llcr agent grid`: publishes grid-intensity events for the configured zones."""

    zones: list[str] = Field(default_factory=lambda: ["DE"])
    ceiling_g_per_kwh: float = Field(default=2000.0, gt=0)
    fill_gaps: bool = Field(
        default=True,
        description="Fill missing and implausible periods with flagged, conservative "
        "estimates (agents/grid/repair.py); a real value later replaces them.",
    )
    max_fill_h: float = Field(default=48.0, gt=0, description="Longest gap filled.")
    outlier_window_h: float = Field(
        default=24.0, gt=0, description="History a value is judged against."
    )
    outlier_low_ratio: float = Field(
        default=0.35, ge=0, lt=1, description="Below this x the window's median: outlier."
    )
    outlier_high_ratio: float = Field(
        default=3.0, gt=1, description="Above this x the window's median: outlier."
    )
    outlier_step_ratio: float = Field(
        default=2.0, gt=1, description="...and a jump by more than this x the last value."
    )
    outlier_min_delta_g: float = Field(
        default=50.0, ge=0, description="...and at least this far from the median (g/kWh)."
    )
    outlier_judge_marginal: bool = Field(
        default=False, description="Judge marginal series too (a MOER near 0 can be real)."
    )
    outlier_min_history: int = Field(
        default=6, ge=1, description="Values in the window needed to judge one."
    )
    file_utc_offset: str | None = Field(
        default=None,
        description="Imported files: the UTC offset (+hh:mm) of naive local times; without "
        "it a file with naive times is refused.",
    )
    poll_interval_s: float = Field(default=300.0, gt=0)
    average_chain: list[ProviderName] = Field(
        default_factory=lambda: list(DEFAULT_AVERAGE_CHAIN),
        description="Providers of the average signal, most trusted first.",
    )
    marginal_chain: list[ProviderName] = Field(
        default_factory=lambda: list(DEFAULT_MARGINAL_CHAIN),
        description="Providers of the marginal signal.",
    )
    electricitymaps_token: SecretStr | None = None
    electricitymaps_url: str = "https://api.electricitymap.org"
    watttime_username: str | None = None
    watttime_password: SecretStr | None = None
    watttime_url: str = "https://api.watttime.org"
    watttime_regions: dict[str, str] = Field(
        default_factory=dict, description="Zone -> WattTime region, e.g. US-CAL-CISO: CAISO_NORTH."
    )
    neso_url: str = "https://api.carbonintensity.org.uk"
    static_g_per_kwh: dict[str, float] = Field(
        default_factory=dict, description="Last-resort value per zone (kind: estimated)."
    )
    request_timeout_s: float = Field(default=5.0, gt=0)
    retry_attempts: int = Field(default=3, ge=1)
    provider_budget_s: float = Field(
        default=10.0, gt=0, description="Most time one provider may take before the next is tried."
    )
    state_dir: Path = Field(default_factory=lambda: data_home() / "grid")
    history_days: int = Field(default=14, ge=1, description="Revision memory per period.")
    metrics_port: int | None = None
