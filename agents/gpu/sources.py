"""GPU sources behind one seam: ``devices()`` once, then ``read(now_ms)`` per sample tick.

* :class:`SimSource`: a simulated host (seeded, deterministic): training / inference /
  idle phases, training power levels drawn from the measured Zeus profiles shipped in
  ``agents/data``, and an energy counter that is exactly the integral of its power.
* :class:`NvmlSource`: real GPUs through NVML (nvidia-ml-py). The ``nvml`` module is
  injectable, so tests drive the same code with a stand-in device.
"""

from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol

from agents.gpu.model import DeviceInfo, JobLabels, MigSlice, ProcessUse, Reading

logger = logging.getLogger(__name__)


class GpuSource(Protocol):
    def devices(self) -> list[DeviceInfo]: ...

    def read(self, now_ms: int) -> list[Reading]:
        """The readings up to ``now_ms`` not returned before, in time order per device.

        Live sources return one reading per device; a device that fails is left out (and
        logged). The replay source returns every trace row that ``now_ms`` has passed.
        """
        ...

    def exhausted(self) -> bool:
        """True when the source has nothing more to give (the end of a replayed trace)."""
        ...


SimModel = Literal["A40", "V100"]
_SIM_LIMITS_W = {"A40": 300.0, "V100": 300.0}
_SIM_IDLE_W = {"A40": 30.0, "V100": 40.0}
Phase = Literal["training", "inference", "idle"]
SIM_PID_BASE = 10_000


@cache
def training_power_levels(model: SimModel) -> tuple[float, ...]:
    """Measured average training power (W) of the Zeus NSDI'23 profiles for ``model``."""
    text = (resources.files("agents") / "data" / f"summary_power_{model.lower()}.csv").read_text()
    return tuple(float(row["average_power"]) for row in csv.DictReader(text.splitlines()))


@dataclass
class _SimGpu:
    info: DeviceInfo
    counter_mj: int
    phase: Phase
    phase_end_ms: int
    power_w: float
    last_ms: int | None = None
    carry: float = 0.0  # sub-millijoule remainder, so the counter is an exact integral


class SimSource:
    """N simulated GPUs of one model, deterministic for a seed and a clock."""

    def __init__(
        self, gpus: int = 8, model: SimModel = "A40", seed: int = 0, host: str = "sim"
    ) -> None:
        self._rng = random.Random(seed)
        self._host = host
        self._levels = training_power_levels(model)
        self._model = model
        self._gpus = [
            _SimGpu(
                DeviceInfo(f"GPU-sim-{host}-{i}", i, f"NVIDIA {model} (sim)", _SIM_LIMITS_W[model]),
                counter_mj=self._rng.randrange(10**9),
                phase="idle",
                phase_end_ms=0,
                power_w=_SIM_IDLE_W[model],
            )
            for i in range(gpus)
        ]

    def devices(self) -> list[DeviceInfo]:
        return [gpu.info for gpu in self._gpus]

    def read(self, now_ms: int) -> list[Reading]:
        return [self._advance(gpu, now_ms) for gpu in self._gpus]

    def exhausted(self) -> bool:
        return False

    def labels_of(self, pid: int) -> JobLabels:
        """Job labels of the simulated processes: one job per GPU, three tenants."""
        index = pid - SIM_PID_BASE
        tenant = ("acme", "globex", "initech")[index % 3]
        model = ("llama-3.1-8b", "mistral-7b", "qwen2.5-14b")[index % 3]
        return JobLabels(f"{self._host}-job-{index}", tenant, model)

    def counters(self) -> dict[str, int]:
        """The simulated driver counters (mJ): what a test compares published energy with."""
        return {gpu.info.uuid: gpu.counter_mj for gpu in self._gpus}

    def _advance(self, gpu: _SimGpu, now_ms: int) -> Reading:
        if gpu.last_ms is not None and now_ms > gpu.last_ms:
            exact = gpu.power_w * (now_ms - gpu.last_ms) + gpu.carry  # W x ms = mJ
            gpu.counter_mj += int(exact)
            gpu.carry = exact - int(exact)
        gpu.last_ms = now_ms
        if now_ms >= gpu.phase_end_ms:
            self._next_phase(gpu, now_ms)
        busy = gpu.phase != "idle"
        return Reading(
            gpu.info.uuid,
            now_ms,
            gpu.counter_mj,
            gpu.power_w,
            utilization_pct=95.0 if gpu.phase == "training" else (55.0 if busy else 0.0),
            memory_used_bytes=(40 if busy else 1) * 2**30,
            temperature_c=35.0 + 40.0 * gpu.power_w / gpu.info.power_limit_w,
            processes=(ProcessUse(SIM_PID_BASE + gpu.info.index, 95.0),) if busy else (),
        )

    def _next_phase(self, gpu: _SimGpu, now_ms: int) -> None:
        gpu.phase = self._rng.choices(("training", "inference", "idle"), (5, 3, 2))[0]
        gpu.phase_end_ms = now_ms + self._rng.randint(30, 600) * 1000
        level = self._rng.choice(self._levels)
        gpu.power_w = {
            "training": level,
            "inference": 0.6 * level,
            "idle": _SIM_IDLE_W[self._model],
        }[gpu.phase] + self._rng.uniform(-2.0, 2.0)


class NvmlSource:
    """Real GPUs via NVML. ``nvml`` defaults to the ``pynvml`` module of nvidia-ml-py."""

    def __init__(self, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml: Any = nvml
        self._nvml.nvmlInit()
        self._handles: list[tuple[DeviceInfo, Any]] = []
        self._mig_handles: dict[str, Any] = {}
        self._util_seen: dict[str, int] = {}  # uuid -> newest process-sample timestamp (us)
        for index in range(self._nvml.nvmlDeviceGetCount()):
            self._handles.append(self._describe(index))
        self.errors = 0

    def _describe(self, index: int) -> tuple[DeviceInfo, Any]:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            has_counter = True
        except nvml.NVMLError:  # pre-Volta: no counter, integrate power instead
            has_counter = False
        migs = self._mig_devices(handle)
        self._mig_handles.update((mig.uuid, mig_handle) for mig, mig_handle in migs)
        info = DeviceInfo(
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            index=index,
            model=_text(nvml.nvmlDeviceGetName(handle)),
            power_limit_w=nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
            has_energy_counter=has_counter,
            mig_slices=tuple(mig for mig, _ in migs),
        )
        return info, handle

    def _mig_devices(self, handle: Any) -> list[tuple[MigSlice, Any]]:
        """The MIG devices of a MIG-enabled GPU (enumerated at start; restart the agent
        after repartitioning). Empty when MIG is off or unsupported."""
        nvml = self._nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except nvml.NVMLError:  # not a MIG-capable GPU
            return []
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        found = []
        for i in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            except nvml.NVMLError:  # no MIG device in this slot
                continue
            mig_slice = MigSlice(
                uuid=_text(nvml.nvmlDeviceGetUUID(mig)),
                gpu_instance_id=int(nvml.nvmlDeviceGetGpuInstanceId(mig)),
                model=_text(nvml.nvmlDeviceGetName(mig)),
                sm_count=int(nvml.nvmlDeviceGetAttributes(mig).multiprocessorCount),
            )
            found.append((mig_slice, mig))
        return found

    def exhausted(self) -> bool:
        return False

    def devices(self) -> list[DeviceInfo]:
        return [info for info, _ in self._handles]

    def read(self, now_ms: int) -> list[Reading]:
        readings = []
        for info, handle in self._handles:
            try:
                readings.append(self._read_one(info, handle, now_ms))
            except self._nvml.NVMLError as exc:  # one GPU failing never stops the others
                self.errors += 1
                logger.warning("nvml read failed for GPU %s (%s): %s", info.index, info.uuid, exc)
        return readings

    def _read_one(self, info: DeviceInfo, handle: Any, now_ms: int) -> Reading:
        nvml = self._nvml
        counter = (
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle) if info.has_energy_counter else None
        )
        processes = () if info.mig_slices else self._processes(handle)
        return Reading(
            uuid=info.uuid,
            t_ms=now_ms,
            energy_counter_mj=counter,
            power_w=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            utilization_pct=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            memory_used_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).used),
            temperature_c=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            processes=self._with_utilisation(info, handle, processes),
            slice_processes=tuple(
                (mig.uuid, self._processes(self._mig_handles[mig.uuid])) for mig in info.mig_slices
            ),
        )

    def _processes(self, handle: Any) -> tuple[ProcessUse, ...]:
        """Processes of a MIG device; NVML has no per-process utilisation there."""
        return tuple(
            ProcessUse(p.pid, 0.0) for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        )

    def _with_utilisation(
        self, info: DeviceInfo, handle: Any, processes: tuple[ProcessUse, ...]
    ) -> tuple[ProcessUse, ...]:
        """Mean SM utilisation per process over the NVML samples since the last read.

        NVML keeps a buffer of per-process samples; passing the newest timestamp seen
        returns only newer ones. A process with no new sample gets 0 (if no process has
        one, the split becomes equal and is flagged ``estimated_share``).
        """
        if not processes:
            return processes
        seen = self._util_seen.get(info.uuid, 0)
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(handle, seen)
        except self._nvml.NVMLError:  # not supported, or no sample since `seen`
            return processes
        totals: dict[int, list[float]] = {}
        newest = seen
        for sample in samples:
            if sample.timeStamp > seen:
                totals.setdefault(sample.pid, []).append(float(sample.smUtil))
                newest = max(newest, sample.timeStamp)
        self._util_seen[info.uuid] = newest
        mean = {pid: sum(values) / len(values) for pid, values in totals.items()}
        return tuple(ProcessUse(p.pid, mean.get(p.pid, 0.0)) for p in processes)

    def close(self) -> None:
        self._nvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
