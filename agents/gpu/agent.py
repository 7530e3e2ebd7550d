"""The GPU agent: read the source every sample tick, build one batch per publish interval.

Logic only: the source, publisher, clock and state file are injected.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agents.gpu.attribution import attribute
from agents.gpu.energy import EnergyMeter, Interval, Rejected
from agents.gpu.model import DeviceInfo, JobLabels
from agents.gpu.sources import GpuSource
from schemas.records import GpuSample, GpuSampleBatch, SampleSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostIdentity:
    agent_id: str
    host: str
    site: str
    zone: str
    source: SampleSource


@dataclass
class AgentState:
    """Sequence counters; persisted before each batch is spooled so numbers never repeat."""

    batch_seq: int = 0
    gpu_seq: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> AgentState:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(int(data["batch_seq"]), {k: int(v) for k, v in data["gpu_seq"].items()})

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"batch_seq": self.batch_seq, "gpu_seq": self.gpu_seq}))
        os.replace(tmp, path)


@dataclass
class AgentCounters:
    samples: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class GpuAgent:
    def __init__(
        self,
        identity: HostIdentity,
        source: GpuSource,
        labels_of: Callable[[int], JobLabels],
        fixed_job: JobLabels | None = None,
        state: AgentState | None = None,
    ) -> None:
        self.identity = identity
        self._source = source
        self._labels_of = labels_of
        self._fixed_job = fixed_job
        self._devices: dict[str, DeviceInfo] = {d.uuid: d for d in source.devices()}
        self._meters = {uuid: EnergyMeter(device) for uuid, device in self._devices.items()}
        self._pending: list[tuple[DeviceInfo, Interval]] = []
        self.state = state or AgentState()
        self.counters = AgentCounters()

    def sample(self, now_ms: int) -> None:
        """Read every device once and keep the finished intervals."""
        for reading in self._source.read(now_ms):
            device = self._devices.get(reading.uuid)
            if device is None:
                continue
            result = self._meters[reading.uuid].step(reading)
            if isinstance(result, Rejected):
                self.counters.rejected[result.reason] = (
                    self.counters.rejected.get(result.reason, 0) + 1
                )
                logger.warning(
                    "GPU %s reading rejected: %s (%s)", device.index, result.reason, result.detail
                )
            elif result is not None:
                self._pending.append((device, result))

    def take_batch(self, now_ms: int) -> GpuSampleBatch | None:
        """The batch of everything sampled since the last one (None when empty)."""
        if not self._pending:
            return None
        samples = [self._sample(device, interval) for device, interval in self._pending]
        self._pending = []
        self.counters.samples += len(samples)
        batch_seq = self.state.batch_seq
        self.state.batch_seq += 1
        ident = self.identity
        return {
            "batch_id": f"{ident.agent_id}:{batch_seq}",
            "agent_id": ident.agent_id,
            "batch_seq": batch_seq,
            "host": ident.host,
            "site": ident.site,
            "zone": ident.zone,
            "source": ident.source,
            "published_at_ms": now_ms,
            "samples": samples,
        }

    def _sample(self, device: DeviceInfo, interval: Interval) -> GpuSample:
        reading = interval.reading
        jobs, job_flags = attribute(
            interval.energy_mj,
            reading.utilization_pct,
            reading.processes,
            self._labels_of,
            mig=device.mig_instance is not None,
            fixed=self._fixed_job,
        )
        seq = self.state.gpu_seq.get(device.uuid, 0)
        self.state.gpu_seq[device.uuid] = seq + 1
        duration_ms = interval.end_ms - interval.start_ms
        return {
            "gpu_uuid": device.uuid,
            "gpu_index": device.index,
            "gpu_model": device.model,
            "mig_instance": device.mig_instance,
            "seq": seq,
            "start_ms": interval.start_ms,
            "end_ms": interval.end_ms,
            "energy_mj": interval.energy_mj,
            "energy_method": interval.method,
            "flags": [*interval.flags, *job_flags],
            "power_w": interval.energy_mj / duration_ms,
            "power_limit_w": device.power_limit_w,
            "utilization_pct": reading.utilization_pct,
            "memory_used_bytes": reading.memory_used_bytes,
            "temperature_c": reading.temperature_c,
            "jobs": jobs,
        }
