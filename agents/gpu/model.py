"""Plain values the GPU agent passes around (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MigSlice:
    """One MIG device of a physical GPU: its UUID, GPU-instance id and SM count."""

    uuid: str
    gpu_instance_id: int
    model: str
    sm_count: int


@dataclass(frozen=True)
class DeviceInfo:
    """A physical GPU as the source sees it, with its MIG devices when MIG is enabled.

    NVML measures energy per physical GPU only; a MIG-enabled GPU's energy is split
    between its MIG devices by their SM counts (see ``agents.gpu.agent``).
    """

    uuid: str
    index: int
    model: str
    power_limit_w: float
    has_energy_counter: bool = True
    mig_slices: tuple[MigSlice, ...] = ()


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
    # MIG-enabled GPUs: the processes of each MIG device, keyed by MIG UUID.
    slice_processes: tuple[tuple[str, tuple[ProcessUse, ...]], ...] = ()


@dataclass(frozen=True)
class JobLabels:
    """Who a process's energy belongs to."""

    job_id: str
    tenant: str = "unattributed"
    model: str | None = None


@dataclass(frozen=True)
class Tokens:
    """Inference tokens processed (prompt) and generated in some interval."""

    prompt: int = 0
    generation: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.prompt + other.prompt, self.generation + other.generation)

    def __bool__(self) -> bool:
        return bool(self.prompt or self.generation)
