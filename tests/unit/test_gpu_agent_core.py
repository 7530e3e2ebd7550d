"""The GPU agent's pure core: interval energy, exact attribution, batches, job labels."""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.gpu.agent import AgentState, GpuAgent, HostIdentity
from agents.gpu.attribution import allocate, attribute
from agents.gpu.energy import EnergyMeter, Interval, Rejected
from agents.gpu.jobs import ProcJobResolver
from agents.gpu.model import DeviceInfo, JobLabels, ProcessUse, Reading, Tokens
from agents.gpu.replay import ReplaySource, parse_trace
from agents.gpu.sources import NvmlSource, SimSource

H100 = DeviceInfo("GPU-1", 0, "NVIDIA H100", power_limit_w=700.0)


def _meter(readings: list[Reading], device: DeviceInfo = H100) -> list[Interval | Rejected | None]:
    meter = EnergyMeter(device)
    return [meter.step(r) for r in readings]


def test_counter_delta_is_the_energy() -> None:
    _, interval = _meter(
        [Reading("GPU-1", 0, 1_000, 300.0), Reading("GPU-1", 1000, 501_000, 500.0)]
    )
    assert isinstance(interval, Interval)
    assert (interval.energy_mj, interval.method, interval.flags) == (500_000, "counter", ())


def test_counter_reset_falls_back_to_power_and_is_flagged() -> None:
    results = _meter([Reading("GPU-1", 0, 9_000_000, 400.0), Reading("GPU-1", 2000, 50, 600.0)])
    interval = results[1]
    assert isinstance(interval, Interval)
    assert interval.energy_mj == 1_000_000  # (400 + 600) / 2 W x 2000 ms
    assert (interval.method, interval.flags) == ("power_integral", ("counter_reset",))


def test_gpu_without_counter_integrates_power() -> None:
    old = DeviceInfo("GPU-1", 0, "Tesla P100", 250.0, has_energy_counter=False)
    interval = _meter([Reading("GPU-1", 0, None, 100.0), Reading("GPU-1", 500, None, 100.0)], old)[
        1
    ]
    assert isinstance(interval, Interval)
    assert (interval.energy_mj, interval.flags) == (50_000, ("no_energy_counter",))


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (Reading("GPU-1", 0, 2_000, 300.0), "clock_skew"),
        (Reading("GPU-1", 1000, 0, math.nan), "no_power_reading"),
        (Reading("GPU-1", 1000, 0, 5_000.0), "absurd_power"),  # reset and 5 kW on a 700 W GPU
    ],
)
def test_absurd_readings_are_rejected(second: Reading, reason: str) -> None:
    results = _meter([Reading("GPU-1", 0, 1_000, math.nan), second])
    assert isinstance(results[1], Rejected) and results[1].reason == reason


def test_counter_jump_above_twice_the_limit_is_not_trusted() -> None:
    interval = _meter([Reading("GPU-1", 0, 0, 300.0), Reading("GPU-1", 1000, 10**9, 300.0)])[1]
    assert isinstance(interval, Interval) and interval.method == "power_integral"


@given(total=st.integers(0, 10**12), weights=st.lists(st.floats(0, 100), min_size=1, max_size=8))
def test_allocation_is_exact(total: int, weights: list[float]) -> None:
    parts = allocate(total, weights)
    assert sum(parts) == total and all(p >= 0 for p in parts)


def test_shared_gpu_split_by_utilisation_per_job() -> None:
    labels = {1: JobLabels("a", "t1"), 2: JobLabels("a", "t1"), 3: JobLabels("b", "t2")}
    shares, flags = attribute(
        1_000_001,
        90.0,
        [ProcessUse(1, 30), ProcessUse(2, 30), ProcessUse(3, 20)],
        labels.__getitem__,
    )
    assert [(s["job_id"], s["energy_mj"], s["sharing"]) for s in shares] == [
        ("a", 750_001, "time_sliced"),
        ("b", 250_000, "time_sliced"),
    ]
    assert flags == ("shared_gpu",)


def test_energy_without_processes_goes_to_an_explicit_job() -> None:
    idle, _ = attribute(5, 0.0, [], lambda pid: JobLabels("x"))
    busy, _ = attribute(5, 40.0, [], lambda pid: JobLabels("x"))
    assert (idle[0]["job_id"], idle[0]["energy_mj"], busy[0]["job_id"]) == (
        "idle",
        5,
        "unattributed",
    )
    equal, flags = attribute(
        3, 50.0, [ProcessUse(1, 0), ProcessUse(2, 0)], lambda pid: JobLabels(f"j{pid}")
    )
    assert sum(s["energy_mj"] for s in equal) == 3 and "estimated_share" in flags


def test_job_labels_from_slurm_kubernetes_and_env(tmp_path: Path) -> None:
    def proc(pid: int, environ: dict[str, str], cgroup: str = "") -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "environ").write_bytes(
            b"\0".join(f"{k}={v}".encode() for k, v in environ.items())
        )
        (tmp_path / str(pid) / "cgroup").write_text(cgroup)

    proc(1, {"SLURM_JOB_ID": "4242", "SLURM_JOB_ACCOUNT": "physics"})
    proc(
        2,
        {},
        "0::/kubepods.slice/kubepods-burstable-pod1b2c3d4e_aaaa_bbbb_cccc_0123456789ab.slice/cri",
    )
    proc(3, {"LLCR_JOB": "train-7", "LLCR_TENANT": "acme", "LLCR_MODEL": "llama"})
    resolve = ProcJobResolver(tmp_path)
    assert resolve(1) == JobLabels("slurm:4242", "physics")
    assert resolve(2).job_id == "k8s-pod:1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"
    assert resolve(3) == JobLabels("train-7", "acme", "llama")
    assert resolve(99) == JobLabels("pid:99", "unattributed")


def test_batches_carry_gap_free_sequences_and_exact_sim_energy() -> None:
    sim = SimSource(gpus=3, seed=7)
    before = sim.counters()
    agent = GpuAgent(HostIdentity("a1", "h1", "s1", "DE", "sim"), sim, lambda pid: JobLabels("j"))
    batches = []
    for t in range(0, 120_000, 1000):
        agent.sample(1_700_000_000_000 + t)
        if t % 5000 == 0 and (batch := agent.take_batch(t)):
            batches.append(batch)
    batches.append(agent.take_batch(0))
    samples = [s for b in batches if b for s in b["samples"]]
    for uuid, start in before.items():
        mine = [s for s in samples if s["gpu_uuid"] == uuid]
        assert [s["seq"] for s in mine] == list(range(len(mine)))
        assert sum(s["energy_mj"] for s in mine) == sim.counters()[uuid] - start
        assert all(sum(j["energy_mj"] for j in s["jobs"]) == s["energy_mj"] for s in mine)
    assert [b["batch_seq"] for b in batches if b] == list(range(len(batches)))


class _FakeNvml:
    """A stand-in for pynvml: two GPUs, the second without an energy counter, one failing read."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    def __init__(self) -> None:
        self.counter = 0
        self.fail_index: int | None = None

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return f"GPU-{h}".encode()

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA H100" if h == 0 else "Tesla P100"

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return 700_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError("Not Supported")
        return self.counter

    def _check(self, h: int) -> None:
        if h == self.fail_index:
            raise self.NVMLError("GPU is lost")

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._check(h)
        return 350_000

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return [SimpleNamespace(pid=11), SimpleNamespace(pid=12)] if h == 0 else []

    def nvmlDeviceGetProcessUtilization(self, h: int, since: int) -> list[Any]:
        return [
            SimpleNamespace(pid=11, smUtil=60, timeStamp=since + 1),
            SimpleNamespace(pid=12, smUtil=20, timeStamp=since + 1),
        ]

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=80)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=2**30)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 55

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        raise self.NVMLError("Not Supported")


def test_nvml_source_through_the_same_seam() -> None:
    nvml = _FakeNvml()
    source = NvmlSource(nvml)
    assert [(d.uuid, d.has_energy_counter, d.power_limit_w) for d in source.devices()] == [
        ("GPU-0", True, 700.0),
        ("GPU-1", False, 700.0),
    ]
    agent = GpuAgent(
        HostIdentity("a", "h", "s", "DE", "nvml"), source, lambda pid: JobLabels(f"job{pid}")
    )
    agent.sample(1000)
    nvml.counter = 350_000
    nvml.fail_index = 1  # GPU 1 fails this tick; GPU 0 carries on
    agent.sample(2000)
    nvml.fail_index = None
    agent.sample(3000)
    batch = agent.take_batch(3000)
    assert batch is not None and source.errors == 1
    gpu0 = [s for s in batch["samples"] if s["gpu_uuid"] == "GPU-0"]
    assert [s["energy_mj"] for s in gpu0] == [350_000, 0]
    assert [(j["job_id"], j["energy_mj"]) for j in gpu0[0]["jobs"]] == [
        ("job11", 262_500),
        ("job12", 87_500),
    ]
    (gpu1,) = [s for s in batch["samples"] if s["gpu_uuid"] == "GPU-1"]
    assert (gpu1["energy_method"], gpu1["energy_mj"], gpu1["flags"]) == (
        "power_integral",
        700_000,
        ["no_energy_counter"],
    )


class _MigNvml(_FakeNvml):
    """GPU 0 in MIG mode with a 3g (60 SMs) and a 1g (16 SMs) device; GPU 1 as before."""

    NVML_DEVICE_MIG_ENABLE = 1
    MIG: ClassVar = {100: ("MIG-a", 1, 60, [21]), 101: ("MIG-b", 2, 16, [])}

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        if h != 0:
            raise self.NVMLError("Not Supported")
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: int) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: int, i: int) -> int:
        if i >= len(self.MIG):
            raise self.NVMLError("Not Found")
        return 100 + i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return (self.MIG[h][0] if h in self.MIG else f"GPU-{h}").encode()

    def nvmlDeviceGetName(self, h: int) -> str:
        return f"NVIDIA H100 MIG {h}" if h in self.MIG else super().nvmlDeviceGetName(h)

    def nvmlDeviceGetGpuInstanceId(self, h: int) -> int:
        return self.MIG[h][1]

    def nvmlDeviceGetAttributes(self, h: int) -> Any:
        return SimpleNamespace(multiprocessorCount=self.MIG[h][2])

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        if h in self.MIG:
            return [SimpleNamespace(pid=p) for p in self.MIG[h][3]]
        return super().nvmlDeviceGetComputeRunningProcesses(h)


def test_mig_devices_split_the_gpu_counter_exactly_by_sm_count() -> None:
    nvml = _MigNvml()
    source = NvmlSource(nvml)
    (gpu0, _) = source.devices()
    assert [(m.uuid, m.gpu_instance_id, m.sm_count) for m in gpu0.mig_slices] == [
        ("MIG-a", 1, 60),
        ("MIG-b", 2, 16),
    ]
    agent = GpuAgent(
        HostIdentity("a", "h", "s", "DE", "nvml"), source, lambda pid: JobLabels(f"job{pid}")
    )
    agent.sample(1000)
    nvml.counter = 100_001
    agent.sample(2000)
    batch = agent.take_batch(2000)
    assert batch is not None
    mig = [s for s in batch["samples"] if s["mig_instance"] is not None]
    assert [(s["gpu_uuid"], s["mig_instance"], s["energy_mj"]) for s in mig] == [
        ("MIG-a", "1", 78_948),  # 100_001 x 60/76, largest remainder
        ("MIG-b", "2", 21_053),
    ]
    assert sum(s["energy_mj"] for s in mig) == 100_001
    assert all("estimated_share" in s["flags"] for s in mig)
    assert [(j["job_id"], j["sharing"]) for j in mig[0]["jobs"]] == [("job21", "mig")]
    assert [(j["job_id"], j["sharing"]) for j in mig[1]["jobs"]] == [("idle", "none")]
    assert {s["seq"] for s in mig} == {0}  # sequences are per MIG device


def test_tokens_go_once_to_the_busiest_job_and_wait_while_none_is_busy() -> None:
    trace = parse_trace(
        io.StringIO(
            "timestamp_ms,gpu,energy_mj,pid,sm_util_pct,job\n"
            "0,0,0,,,\n"
            "1000,0,100000,,,\n"  # idle: no job to give tokens to
            "2000,0,400000,7,80,vllm-7b\n"
            "2000,0,400000,8,20,etl\n"
        )
    )
    source = ReplaySource(trace, speed=0)
    agent = GpuAgent(HostIdentity("a", "h", "s", "DE", "replay"), source, source.labels_of)
    agent.sample(0)
    agent.sample(1000)
    agent.add_tokens(Tokens(prompt=1200, generation=300))
    idle = agent.take_batch(1000)
    assert idle is not None
    assert [(j["job_id"], j["prompt_tokens"]) for j in idle["samples"][0]["jobs"]] == [("idle", 0)]
    agent.add_tokens(Tokens(prompt=1, generation=1))
    agent.sample(2000)
    busy = agent.take_batch(2000)
    assert busy is not None
    assert [
        (j["job_id"], j["prompt_tokens"], j["generation_tokens"])
        for j in busy["samples"][0]["jobs"]
    ] == [("vllm-7b", 1201, 301), ("etl", 0, 0)]


def test_tokens_go_to_the_configured_job() -> None:
    agent = GpuAgent(
        HostIdentity("a", "h", "s", "DE", "sim"),
        SimSource(gpus=2, seed=1),
        lambda pid: JobLabels(f"job{pid}"),
        fixed_job=JobLabels("serving", "acme"),
    )
    agent.sample(0)
    agent.sample(1000)
    agent.add_tokens(Tokens(prompt=10, generation=5))
    batch = agent.take_batch(1000)
    assert batch is not None
    shares = [j for s in batch["samples"] for j in s["jobs"]]
    assert [(j["prompt_tokens"], j["generation_tokens"]) for j in shares] == [(10, 5), (0, 0)]


def test_sequence_state_is_reserved_ahead_so_a_crash_never_repeats_a_number(
    tmp_path: Path,
) -> None:
    class Counted(AgentState):
        writes = 0

        def save(self, path: Path, headroom: int = 0) -> None:
            Counted.writes += 1
            super().save(path, headroom)

    path = tmp_path / "state.json"
    state = Counted()
    for _ in range(100):  # 100 batches of one sample each
        state.gpu_seq["GPU-1"] = state.gpu_seq.get("GPU-1", 0) + 1
        state.batch_seq += 1
        state.reserve(path, headroom=40)
    assert Counted.writes == 3  # at 1, 41 and 81: not once per batch
    crashed = AgentState.load(path)  # a crash now: the file is ahead, never behind
    assert crashed.batch_seq >= 100 and crashed.gpu_seq["GPU-1"] >= 100
    state.save(path)  # a clean stop writes the exact counters
    assert AgentState.load(path).gpu_seq == {"GPU-1": 100}
