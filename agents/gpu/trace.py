"""Record real readings as an llcr trace (CSV) that the replay source reads back.

``llcr agent trace --out h100.csv --duration 60`` on a GPU host writes one row per
GPU (and per process on it) per tick: the NVML energy counter, power, utilisation and
the rest, with epoch-millisecond timestamps. docs/replay-format.md has the columns.
:class:`RecordingSource` does the same while an agent runs, behind the source seam.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable
from typing import IO

from agents.gpu.model import DeviceInfo, Reading
from agents.gpu.sources import GpuSource

COLUMNS = (
    "timestamp_ms",
    "gpu",
    "uuid",
    "model",
    "power_limit_w",
    "energy_mj",
    "power_w",
    "utilization_pct",
    "memory_used_bytes",
    "temperature_c",
    "pid",
    "sm_util_pct",
    "job",
    "tenant",
    "job_model",
)


class RecordingSource:
    """Wraps a source and writes every reading it returns to ``out`` as trace rows."""

    def __init__(self, source: GpuSource, out: IO[str]) -> None:
        self._source = source
        self._out = out
        self._devices: dict[str, DeviceInfo] = {d.uuid: d for d in source.devices()}
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(COLUMNS)
        self.rows = 0

    def devices(self) -> list[DeviceInfo]:
        return self._source.devices()

    def exhausted(self) -> bool:
        return self._source.exhausted()

    def read(self, now_ms: int) -> list[Reading]:
        readings = self._source.read(now_ms)
        for reading in readings:
            self._write(reading)
        self._out.flush()
        return readings

    def _write(self, reading: Reading) -> None:
        device = self._devices[reading.uuid]
        base: list[object] = [
            reading.t_ms,
            device.index,
            device.uuid,
            device.model,
            device.power_limit_w,
            "" if reading.energy_counter_mj is None else reading.energy_counter_mj,
            "" if reading.power_w is None else reading.power_w,
            reading.utilization_pct,
            reading.memory_used_bytes,
            reading.temperature_c,
        ]
        for process in reading.processes or (None,):
            extra: list[object] = ["", "", "", "", ""]
            if process is not None:
                extra = [process.pid, process.sm_util_pct, "", "", ""]
            self._writer.writerow(base + extra)
            self.rows += 1


def record(
    source: GpuSource,
    out: IO[str],
    *,
    duration_s: float,
    interval_s: float,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Write readings every ``interval_s`` for ``duration_s``; return the rows written."""
    stop = stop or threading.Event()
    recording = RecordingSource(source, out)
    started = tick = time.monotonic()
    while not stop.is_set() and time.monotonic() - started <= duration_s:
        recording.read(int(clock() * 1000))
        tick += interval_s
        stop.wait(max(0.0, tick - time.monotonic()))
    return recording.rows
