"""What a `llcr up` run will be, decided before anything starts: its zones (read from
the grid files, so a file that would leave every hour unpriced fails at once), its clock,
its run directory, and the removal processes' settings.

The one module of the tree that reads the agents' file formats from the streams side
(grid CSVs and GPU traces): `up` is the orchestrator above both (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from agents.cli import bundled_grid_files
from agents.settings import GpuAgentSettings, GridFeederSettings
from schemas.errors import ConfigError
from schemas.units import HOUR_MS
from streams.embedded.broker import free_port
from streams.settings import (
    ActionsSettings,
    CaptureUnitConfig,
    ClickHouseSettings,
    SignalsSettings,
    SinkSettings,
    WorkerSettings,
)

SIM_START = "2023-01-01T00:00:00Z"  # where the shipped grid data starts
DEFAULT_ZONES = ("DE", "FR", "GB")


def new_run_dir(home: Path) -> Path:
    """``home/runs/<UTC time>-<pid>``, created, with ``home/chdb`` linked to its store.

    A real directory at ``home/chdb`` (a store not made by `up`) is never replaced."""
    link = home / "chdb"
    if link.exists() and not link.is_symlink():
        raise click.UsageError(
            f"{link} is a store of its own, not a link `llcr up` made: "
            "give up another --data-dir (or LLCR_HOME)"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run = home / "runs" / f"{stamp}-{os.getpid()}"
    run.mkdir(parents=True)
    staged = home / f".chdb-{os.getpid()}"
    staged.unlink(missing_ok=True)
    staged.symlink_to(Path("runs") / run.name / "chdb", target_is_directory=True)
    os.replace(staged, link)  # atomic: a reader sees the old run or the new one
    return run


@dataclass(frozen=True)
class Clock:
    """How every process tells time: one simulated clock that reads ``start`` at the wall
    clock's ``anchor_ms`` and runs ``speed`` times faster, or (``start`` None) the wall
    clock itself."""

    start: str | None
    speed: float
    anchor_ms: int | None

    def env(self) -> dict[str, str]:
        if self.start is None:
            return {}
        return {
            "LLCR_SIM_START": self.start,
            "LLCR_SIM_SPEED": str(self.speed),
            "LLCR_SIM_ANCHOR_MS": str(self.anchor_ms),
        }

    def args(self) -> list[str]:
        """The agents' and the feeder's options for this clock."""
        if self.start is None:
            return []
        return [
            "--start",
            self.start,
            "--anchor-ms",
            str(self.anchor_ms),
            "--speed",
            str(self.speed),
        ]

    def __str__(self) -> str:
        if self.start is None:
            return "the wall clock (live)"
        return f"{self.start} at epoch ms {self.anchor_ms}, {self.speed:g}x (every process)"


@dataclass(frozen=True)
class RunPlan:
    """Everything the spawner needs to start a run's processes."""

    run_dir: Path
    zones: list[str]
    variant: str
    clock: Clock
    grid_files: tuple[Path, ...]
    grid_utc_offset: str | None
    sim_hosts: int
    gpus: int
    traces: tuple[Path, ...]
    nvml: bool


def has_nvml() -> bool:
    """Whether this machine has a GPU that NVML can read."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount()) > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no GPU: pynvml raises NVMLError or OSError
        return False


def shipped_means(zones: list[str]) -> dict[str, float]:
    """Each zone's mean direct intensity over the shipped 2023 file (g/kWh)."""
    from agents.grid.files import read_intensity_csv

    means = {}
    for path in bundled_grid_files():
        zone = path.name.split("_")[0]
        if zone in zones:
            with path.open(encoding="utf-8-sig", newline="") as lines:
                observations, _ = read_intensity_csv(lines, path.name)
            values = [o.value for o in observations if o.variant == "direct"]
            means[zone] = round(sum(values) / len(values), 2)
    return means


def zones_of(
    zones: str | None, grid_files: tuple[Path, ...], variant: str, utc_offset: str | None
) -> list[str]:
    """The zones asked for, else the zones of the grid files, else the default ones.

    Each grid file is read now, so what would leave every hour unpriced fails at start in
    one line: a file that cannot be read (naive times without ``--grid-utc-offset``), or
    whose average intensity for a zone it covers is not in the variant priced."""
    from agents.grid.files import IntensityFileError, parse_utc_offset, read_intensity_csv

    offset = None if utc_offset is None else parse_utc_offset(utc_offset)
    found: list[str] = []
    for path in grid_files:
        with path.open(encoding="utf-8-sig", newline="") as lines:
            try:
                observations, _ = read_intensity_csv(lines, path.name, offset)
            except IntensityFileError as exc:
                raise ConfigError(f"--grid-file {exc}") from None
        offered: dict[str, set[str]] = {}
        for o in observations:
            if o.signal == "average":
                offered.setdefault(o.zone, set()).add(o.variant)
        for zone, variants in sorted(offered.items()):
            if variant not in variants:
                raise ConfigError(
                    f"--grid-file {path.name}: its average intensity for {zone} is "
                    f"{' and '.join(sorted(variants))} only, and up prices the {variant} "
                    "variant, so every hour would stay unpriced",
                    hint=f"pass --variant {min(variants)}, or a file with {variant} values",
                )
        found += sorted({o.zone for o in observations} - set(found))
    if zones:
        return [z.strip() for z in zones.split(",") if z.strip()]
    if not grid_files:
        return list(DEFAULT_ZONES)
    if not found:
        raise ConfigError("--grid-file: no zone in the grid files")
    return found


def trace_start(traces: tuple[Path, ...]) -> str:
    """The hour (ISO, UTC) of the earliest reading of the traces."""
    from agents.gpu.replay import TraceError, parse_trace

    firsts = []
    for path in traces:
        try:
            with path.open(newline="") as lines:
                firsts.append(parse_trace(lines).readings[0].t_ms)
        except (TraceError, IndexError) as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--gpu-trace") from exc
    hour_ms = min(firsts) // HOUR_MS * HOUR_MS
    return datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:24]


def shipped_files(zones: list[str]) -> list[Path]:
    """The shipped 2023 grid files of ``zones``."""
    return [f for f in bundled_grid_files() if f.name.split("_")[0] in zones]


# -- each child's settings: typed and validated here, passed as LLCR_* ----------------


def sink_env(dsn: str) -> dict[str, str]:
    """The sink on the run's store. A simulated hour passes in seconds here, so it writes
    every 0.5 s instead of every second (docs/benchmarks.md, end to end)."""
    return SinkSettings.checked(
        clickhouse=ClickHouseSettings(dsn=dsn), batch_max_wait_s=0.5
    ).child_env()


def worker_env(zones: list[str], clock: Clock, variant: str, data_dir: Path) -> dict[str, str]:
    """The matching worker: the run's zones and variant, its sim hosts priced (`up` is the
    demo; a deployment's worker is not), provisional numbers every 0.5 s."""
    return WorkerSettings.checked(
        data_dir=data_dir,
        zones=zones,
        grace_s=max(5.0, clock.speed),
        max_wait_s=10.0,
        average_variant=variant,
        accept_sources=["nvml", "replay", "sim"],
        live_every_s=0.5,
        tick_s=0.25,
        # Every tick visits every retained hour of every host. Intensity comes seconds
        # late here at most, and 72 h pass in 12 minutes at 360x: 2 h is plenty.
        retention_h=float(os.environ.get("LLCR_RETENTION_H", "2")),
    ).child_env()


def signals_env(port: int, variant: str) -> dict[str, str]:
    return SignalsSettings.checked(api_port=port, variant=variant).child_env()


def removal_env(zones: list[str], speed: float, ledger_head: Path) -> dict[str, str]:
    """Settings of the removal processes: one sim capture unit per site, the sim provider,
    deadlines short enough to see orders, and the ledger's head checkpoint."""
    units = {
        f"{zone.lower()}-site": CaptureUnitConfig(
            unit_id=f"{zone.lower()}-capture-1",
            capacity_kg_per_h=0.5,
            thermal_kwh_per_t=2000,
            electric_kwh_per_t=2700,
            recoverable_heat_fraction=0.6,
            min_net_g=10,
            ramp_kg_per_h_per_h=2,
        )
        for zone in zones
    }
    return ActionsSettings.checked(
        capture_units=units,
        provider_url=f"http://127.0.0.1:{free_port()}",
        min_lot_g=100,
        latency_target_h=6.0,
        order_lead_h=1.0,
        plan_quiet_s=max(0.5, 30.0 / speed),
        capture_window_h=2.0,
        ledger_head=ledger_head,
    ).child_env()


def grid_env(
    state_dir: Path,
    *,
    utc_offset: str | None = None,
    live_zones: list[str] | None = None,
    static: dict[str, float] | None = None,
) -> dict[str, str]:
    """The grid feeder: replaying files (a named UTC offset for their naive times), or
    live on ``live_zones`` with ``static`` means as the fallback."""
    fields: dict[str, object] = {"state_dir": state_dir}
    if utc_offset is not None:
        fields["file_utc_offset"] = utc_offset
    if live_zones is not None:
        fields.update(zones=live_zones, static_g_per_kwh=static or {}, poll_interval_s=60.0)
    return GridFeederSettings.checked(**fields).child_env()


def agent_env(host: str, zone: str, spool_dir: Path, clock: Clock) -> dict[str, str]:
    """One GPU agent: its host, zone and site, sampling every 10 simulated seconds."""
    interval = 1.0 if clock.start is None else max(0.02, 10 / clock.speed)
    return GpuAgentSettings.checked(
        host=host,
        zone=zone,
        site=f"{zone.lower()}-site",
        spool_dir=spool_dir,
        sample_interval_s=interval,
        publish_interval_s=0.25,
    ).child_env()
