"""The GPU agent: read the source every sample tick, build one batch per publish interval.

Logic only: the source, publisher, clock and state file are injected.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from agents.gpu.attribution import IDLE, UNATTRIBUTED, allocate, attribute
from agents.gpu.energy import EnergyMeter, Interval, Rejected
from agents.gpu.model import DeviceInfo, JobLabels, ProcessUse, Tokens
from agents.gpu.sources import GpuSource
from schemas.records import GpuSample, GpuSampleBatch, SampleFlag, SampleSource

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
    """Sequence counters (the next number to use), kept on disk so numbers never repeat.

    :meth:`reserve` runs before each batch is spooled. It writes the counters plus a
    headroom only when the counters reach what was written, so most batches write
    nothing. A crash then leaves a gap of at most ``headroom`` numbers and never a repeat.
    A clean stop :meth:`save` s the exact counters: no gap.
    """

    batch_seq: int = 0
    gpu_seq: dict[str, int] = field(default_factory=dict)
    _reserved: tuple[int, dict[str, int]] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path) -> AgentState:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(int(data["batch_seq"]), {k: int(v) for k, v in data["gpu_seq"].items()})

    def save(self, path: Path, headroom: int = 0) -> None:
        gpu_seq = {k: v + headroom for k, v in self.gpu_seq.items()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"batch_seq": self.batch_seq + headroom, "gpu_seq": gpu_seq}))
        os.replace(tmp, path)
        self._reserved = (self.batch_seq + headroom, gpu_seq)

    def reserve(self, path: Path, headroom: int = 3600) -> None:
        """Make sure the file holds counters at least as high as the current ones."""
        if self._reserved is not None:
            batch, gpus = self._reserved
            if self.batch_seq <= batch and all(
                seq <= gpus.get(uuid, -1) for uuid, seq in self.gpu_seq.items()
            ):
                return
        self.save(path, headroom)


@dataclass
class AgentCounters:
    """What the agent has batched so far (the metrics endpoint reads these)."""

    samples: int = 0
    batches: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    gpu_energy_mj: dict[str, int] = field(default_factory=dict)  # by GPU/MIG UUID
    gpu_power_w: dict[str, float] = field(default_factory=dict)  # of the latest sample
    gpu_labels: dict[str, tuple[int, str]] = field(default_factory=dict)  # uuid -> index, model
    job_energy_mj: dict[tuple[str, str], int] = field(default_factory=dict)  # (job, tenant)

    def count(self, samples: list[GpuSample]) -> None:
        self.batches += 1
        self.samples += len(samples)
        for s in samples:
            uuid = s["gpu_uuid"]
            self.gpu_energy_mj[uuid] = self.gpu_energy_mj.get(uuid, 0) + s["energy_mj"]
            self.gpu_power_w[uuid] = s["power_w"]
            self.gpu_labels[uuid] = (s["gpu_index"], s["gpu_model"])
            for job in s["jobs"]:
                key = (job["job_id"], job["tenant"])
                self.job_energy_mj[key] = self.job_energy_mj.get(key, 0) + job["energy_mj"]


class GpuAgent:
    def __init__(
        self,
        identity: HostIdentity,
        source: GpuSource,
        labels_of: Callable[[int], JobLabels],
        *,
        fixed_job: JobLabels | None = None,
        state: AgentState | None = None,
        tokens_job: str | None = None,
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
        self._tokens_job = tokens_job or (fixed_job.job_id if fixed_job else None)
        self._tokens = Tokens()

    def exhausted(self) -> bool:
        """The source has nothing more (end of a replayed trace) and nothing is pending."""
        return self._source.exhausted() and not self._pending

    def add_tokens(self, tokens: Tokens) -> None:
        """Inference tokens to attach to the next batch (see :meth:`_attach_tokens`)."""
        self._tokens += tokens

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
        samples = [s for device, interval in self._pending for s in self._samples(device, interval)]
        self._pending = []
        self._attach_tokens(samples)
        self.counters.count(samples)
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

    def _attach_tokens(self, samples: list[GpuSample]) -> None:
        """Give the pending tokens to one job share in the batch, so they count once.

        The job is ``tokens_job`` (default: the configured LLCR_JOB); without one, the
        job with the most energy in the batch that is not idle or unattributed. With no
        such job in the batch the tokens wait for the next batch.
        """
        if not self._tokens:
            return
        shares = [j for s in samples for j in s["jobs"]]
        if self._tokens_job is not None:
            candidates = [j for j in shares if j["job_id"] == self._tokens_job]
        else:
            idle = (IDLE.job_id, UNATTRIBUTED.job_id)
            candidates = [j for j in shares if j["job_id"] not in idle]
        if not candidates:
            return
        energy: dict[str, int] = {}
        for share in candidates:
            energy[share["job_id"]] = energy.get(share["job_id"], 0) + share["energy_mj"]
        target = max(energy, key=lambda job: energy[job])
        share = next(j for j in candidates if j["job_id"] == target)
        share["prompt_tokens"] += self._tokens.prompt
        share["generation_tokens"] += self._tokens.generation
        self._tokens = Tokens()

    def _samples(self, device: DeviceInfo, interval: Interval) -> list[GpuSample]:
        """One sample per GPU, or one per MIG device of a MIG-enabled GPU.

        NVML meters the physical GPU only, so its energy is split between the MIG devices
        by SM count (exactly, largest remainder) and flagged ``estimated_share``; the
        MIG samples of an interval sum to the GPU's counter delta.
        """
        reading = interval.reading
        if not device.mig_slices:
            return [self._sample(device, interval, uuid=device.uuid, model=device.model)]
        parts = allocate(interval.energy_mj, [m.sm_count for m in device.mig_slices])
        by_slice = dict(reading.slice_processes)
        flags: tuple[SampleFlag, ...] = (*interval.flags, "estimated_share")
        return [
            self._sample(
                device,
                replace(interval, energy_mj=energy, flags=flags),
                uuid=mig.uuid,
                model=mig.model,
                mig_instance=str(mig.gpu_instance_id),
                slice_processes=by_slice.get(mig.uuid, ()),
            )
            for mig, energy in zip(device.mig_slices, parts, strict=True)
        ]

    def _sample(
        self,
        device: DeviceInfo,
        interval: Interval,
        *,
        uuid: str,
        model: str,
        mig_instance: str | None = None,
        slice_processes: tuple[ProcessUse, ...] = (),
    ) -> GpuSample:
        reading = interval.reading
        mig = mig_instance is not None
        jobs, job_flags = attribute(
            interval.energy_mj,
            # NVML has no per-MIG utilisation: a MIG device with processes counts as busy.
            (100.0 if slice_processes else 0.0) if mig else reading.utilization_pct,
            slice_processes if mig else reading.processes,
            self._labels_of,
            mig=mig,
            fixed=self._fixed_job,
        )
        seq = self.state.gpu_seq.get(uuid, 0)
        self.state.gpu_seq[uuid] = seq + 1
        duration_ms = interval.end_ms - interval.start_ms
        return {
            "gpu_uuid": uuid,
            "gpu_index": device.index,
            "gpu_model": model,
            "mig_instance": mig_instance,
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
