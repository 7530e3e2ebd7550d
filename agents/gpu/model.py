"""Plain values the GPU agent passes around (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeviceInfo:
    """A GPU or MIG device as the source sees it."""

    uuid: str
    index: int
    model: str
    power_limit_w: float
    has_energy_counter: bool = True
    mig_instance: str | None = None


@dataclass(frozen=True)
class ProcessUse:
    """One process on a GPU with its share of SM utilisation (percent, may be 0)."""

    pid: int
    sm_util_pct: float


@dataclass(frozen=True)
class Reading:
    """One instantaneous reading of one device.

    ``energy_counter_mj`` is the driver's cumulative energy counter (None when the GPU
    has none); ``power_w`` is the (trailing-average) board power.
    """

    uuid: str
    t_ms: int
    energy_counter_mj: int | None
    power_w: float | None
    utilization_pct: float = 0.0
    memory_used_bytes: int = 0
    temperature_c: float = 0.0
    processes: tuple[ProcessUse, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class JobLabels:
    """Who a process's energy belongs to."""

    job_id: str
    tenant: str = "unattributed"
    model: str | None = None
