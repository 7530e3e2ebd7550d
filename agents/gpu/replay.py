"""Replay a recorded GPU trace (CSV) through the source seam, with its original timestamps.

Two dialects are read, told apart by their header (docs/replay-format.md has the detail):

* **llcr traces**, as written by ``llcr agent trace`` (real NVML readings):
  ``timestamp_ms,gpu,uuid,model,power_limit_w,energy_mj,power_w,utilization_pct,
  memory_used_bytes,temperature_c,pid,sm_util_pct,job,tenant,job_model``.
  Required: a timestamp (``timestamp_ms`` epoch milliseconds, or ``timestamp`` ISO-8601),
  ``gpu`` (index or UUID) and at least one of ``energy_mj`` (the driver's cumulative
  counter) and ``power_w``. Several rows with the same timestamp and GPU are one reading
  with several processes.
* **nvidia-smi** ``--query-gpu=timestamp,index,uuid,name,power.draw,power.limit,...
  --format=csv`` output, units in the header and the values ("75.69 W", "0 %",
  "[N/A]"). nvidia-smi has no energy counter column, so its energy is integrated power
  (flagged ``no_energy_counter`` downstream).

Naive timestamps (nvidia-smi prints local time without a zone) are read as UTC unless
``utc_offset_min`` says otherwise. The pure part (:func:`parse_trace`) does no I/O.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agents.gpu.model import DeviceInfo, JobLabels, ProcessUse, Reading
from schemas.errors import ConfigError

# header (lower-cased, units stripped) -> llcr column
_ALIASES = {
    "index": "gpu",
    "name": "model",
    "power.draw": "power_w",
    "power.draw.instant": "power_w",
    "power.draw.average": "power_w",
    "power.limit": "power_limit_w",
    "enforced.power.limit": "power_limit_w",
    "utilization.gpu": "utilization_pct",
    "memory.used": "memory_used_mib",
    "temperature.gpu": "temperature_c",
}
_DEFAULT_POWER_LIMIT_W = 1000.0  # only when a trace has no power limit column
_MISSING = {"", "[n/a]", "n/a", "[not supported]", "[unknown error]", "nan"}


class TraceError(ConfigError):
    """A trace file that cannot be replayed; says the line and why."""


@dataclass
class Trace:
    devices: list[DeviceInfo]
    readings: list[Reading]  # sorted by time, then GPU index
    # the id a process replays as -> its job labels: the trace's pid, or (a pid the trace
    # reuses for another job later) a new id from that row on
    labels: dict[int, JobLabels] = field(default_factory=dict)


REUSED_PID_BASE = 1 << 40  # ids of reused pids, above any real pid


def _column(header: str) -> str:
    name = header.strip().lower().split(" [", 1)[0].strip()
    return _ALIASES.get(name, name)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    value = text.strip().split(" ", 1)[0]  # "75.69 W" -> "75.69"
    if value.lower() in _MISSING or text.strip().lower() in _MISSING:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _timestamp_ms(row: dict[str, str], tz: timezone) -> int:
    if row.get("timestamp_ms", "").strip():
        return int(float(row["timestamp_ms"]))
    text = row.get("timestamp", "").strip()
    if not text:
        raise ValueError("no timestamp_ms or timestamp")
    text = text.replace("/", "-", 2)  # nvidia-smi: 2026/11/22 23:18:24.064
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return round(moment.timestamp() * 1000)


def parse_trace(lines: Iterable[str], utc_offset_min: int = 0) -> Trace:
    """Parse a trace's lines; raise :class:`TraceError` naming the first bad line."""
    reader = csv.reader(lines, skipinitialspace=True)
    try:
        header = [_column(h) for h in next(reader)]
    except StopIteration:
        raise TraceError("trace is empty") from None
    if "gpu" not in header and "uuid" not in header:
        raise TraceError(f"trace header has no gpu/index or uuid column: {header}")
    if "energy_mj" not in header and "power_w" not in header:
        raise TraceError("trace header has neither energy_mj nor power_w/power.draw")
    tz = timezone(timedelta(minutes=utc_offset_min))
    devices: dict[str, DeviceInfo] = {}
    merged: dict[tuple[int, str], Reading] = {}
    ids = _ProcessIds()
    for line_no, values in enumerate(reader, start=2):
        if not values or all(not v.strip() for v in values):
            continue
        row = dict(zip(header, values, strict=False))
        try:
            reading, device, process, job = _row(row, tz, devices)
        except (ValueError, KeyError) as exc:
            raise TraceError(f"trace line {line_no}: {exc}") from exc
        devices.setdefault(device.uuid, device)
        if job is not None:
            process = ProcessUse(ids.id_of(process, job), process.sm_util_pct if process else 0.0)
        key = (reading.t_ms, device.uuid)
        previous = merged.get(key)
        if previous is None:
            merged[key] = Reading(**{**vars(reading), "processes": _procs(process)})
        else:
            merged[key] = Reading(
                **{**vars(previous), "processes": previous.processes + _procs(process)}
            )
    if not merged:
        raise TraceError("trace has a header but no rows")
    order = {uuid: info.index for uuid, info in devices.items()}
    readings = sorted(merged.values(), key=lambda r: (r.t_ms, order[r.uuid]))
    return Trace(sorted(devices.values(), key=lambda d: d.index), readings, ids.labels)


class _ProcessIds:
    """The id each labelled row's process replays as, and the labels of each id."""

    def __init__(self) -> None:
        self.labels: dict[int, JobLabels] = {}
        self._synthetic: dict[JobLabels, int] = {}  # jobs of rows without a pid
        self._current: dict[int, tuple[JobLabels, int]] = {}  # trace pid -> (job now, id)

    def id_of(self, process: ProcessUse | None, job: JobLabels) -> int:
        if process is None:
            ident = -(self._synthetic.setdefault(job, len(self._synthetic) + 1))
        else:  # by (pid, time): a pid reused by another job does not relabel the past
            seen = self._current.get(process.pid)
            if seen is None:
                ident = process.pid
            elif seen[0] == job:
                ident = seen[1]
            else:
                ident = REUSED_PID_BASE + len(self.labels)
            self._current[process.pid] = (job, ident)
        self.labels[ident] = job
        return ident


def _procs(process: ProcessUse | None) -> tuple[ProcessUse, ...]:
    return (process,) if process is not None else ()


def _row(
    row: dict[str, str], tz: timezone, devices: dict[str, DeviceInfo]
) -> tuple[Reading, DeviceInfo, ProcessUse | None, JobLabels | None]:
    gpu = row.get("gpu", "").strip()
    uuid = row.get("uuid", "").strip() or (gpu if not gpu.isdigit() else f"GPU-replay-{gpu}")
    known = devices.get(uuid)
    energy = _number(row.get("energy_mj"))
    power = _number(row.get("power_w"))
    if energy is None and power is None:
        raise ValueError("neither energy_mj nor power_w has a value")
    device = known or DeviceInfo(
        uuid=uuid,
        index=int(gpu) if gpu.isdigit() else len(devices),
        model=row.get("model", "").strip() or "unknown (replay)",
        power_limit_w=_number(row.get("power_limit_w")) or _DEFAULT_POWER_LIMIT_W,
        has_energy_counter="energy_mj" in row,
    )
    mib = _number(row.get("memory_used_mib"))
    reading = Reading(
        uuid=uuid,
        t_ms=_timestamp_ms(row, tz),
        energy_counter_mj=round(energy) if energy is not None else None,
        power_w=power,
        utilization_pct=_number(row.get("utilization_pct")) or 0.0,
        memory_used_bytes=int(_number(row.get("memory_used_bytes")) or (mib or 0.0) * 2**20),
        temperature_c=_number(row.get("temperature_c")) or 0.0,
    )
    pid = _number(row.get("pid"))
    process = ProcessUse(int(pid), _number(row.get("sm_util_pct")) or 0.0) if pid else None
    job_id = row.get("job", "").strip()
    job = (
        JobLabels(
            job_id,
            row.get("tenant", "").strip() or "unattributed",
            row.get("job_model", "").strip() or None,
        )
        if job_id
        else None
    )
    return reading, device, process, job


class ReplaySource:
    """A parsed trace behind the GpuSource seam, paced by ``clock``.

    ``clock()`` maps wall time to trace time: the trace's first timestamp plus the elapsed
    wall time times ``speed`` (``speed <= 0``: as fast as the loop runs, all at once).
    """

    def __init__(
        self,
        trace: Trace,
        speed: float = 1.0,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trace = trace
        self._next = 0
        self._speed = speed
        self._wall = wall
        self._wall0 = wall()
        self._t0_ms = trace.readings[0].t_ms

    @classmethod
    def from_file(cls, path: Path, speed: float = 1.0, utc_offset_min: int = 0) -> ReplaySource:
        try:
            with path.open(newline="") as lines:
                return cls(parse_trace(lines, utc_offset_min), speed)
        except OSError as exc:
            raise TraceError(f"cannot read trace {path}: {exc}") from exc

    def clock(self) -> float:
        """Trace time now, in epoch seconds (what the run loop samples with)."""
        if self._speed <= 0:
            return self._trace.readings[-1].t_ms / 1000
        return self._t0_ms / 1000 + (self._wall() - self._wall0) * self._speed

    def devices(self) -> list[DeviceInfo]:
        return list(self._trace.devices)

    def read(self, now_ms: int) -> list[Reading]:
        readings = self._trace.readings
        start = self._next
        while self._next < len(readings) and readings[self._next].t_ms <= now_ms:
            self._next += 1
        return readings[start : self._next]

    def exhausted(self) -> bool:
        return self._next >= len(self._trace.readings)

    def labels_of(self, pid: int) -> JobLabels:
        """Job labels the trace gave a process (its job/tenant/job_model columns)."""
        return self._trace.labels.get(pid, JobLabels(f"pid:{pid}"))
