"""The replay source on real traces recorded on an H100 (tests/fixtures/traces/README.md)."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import pytest

from agents.gpu.agent import GpuAgent, HostIdentity
from agents.gpu.model import JobLabels
from agents.gpu.replay import ReplaySource, TraceError, parse_trace
from agents.gpu.sources import SimSource
from agents.gpu.trace import RecordingSource

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _replay_all(path: Path) -> tuple[ReplaySource, list[dict]]:
    source = ReplaySource.from_file(path, speed=0)
    agent = GpuAgent(HostIdentity("a", "h", "s", "DE", "replay"), source, source.labels_of)
    agent.sample(int(source.clock() * 1000))
    assert source.exhausted()
    batch = agent.take_batch(0)
    assert batch is not None
    return source, list(batch["samples"])


def test_real_nvml_trace_replays_to_its_exact_counter_delta() -> None:
    path = TRACES / "h100_nvml_matmul.csv"
    rows = _rows(path)
    _, samples = _replay_all(path)
    assert len(samples) == len(rows) - 1
    assert (
        sum(s["energy_mj"] for s in samples)
        == int(rows[-1]["energy_mj"]) - int(rows[0]["energy_mj"])
        == 19_006_046
    )
    assert {s["energy_method"] for s in samples} == {"counter"}
    # the original timestamps, not the replay's wall clock
    assert samples[0]["start_ms"] == int(rows[0]["timestamp_ms"])
    assert samples[-1]["end_ms"] == int(rows[-1]["timestamp_ms"])
    assert max(s["power_w"] for s in samples) == pytest.approx(693.6, abs=0.1)


def test_real_nvidia_smi_trace_integrates_power_and_says_so() -> None:
    _, samples = _replay_all(TRACES / "h100_nvidia_smi_matmul.csv")
    assert {s["energy_method"] for s in samples} == {"power_integral"}
    assert all(s["flags"] == ["no_energy_counter"] for s in samples)
    assert {s["gpu_model"] for s in samples} == {"NVIDIA H100 80GB HBM3"}
    assert {s["power_limit_w"] for s in samples} == {700.0}
    # 2026/11/22 23:25:23.691 (naive, read as UTC)
    assert samples[0]["start_ms"] == 1_795_389_923_691
    # the same load as the NVML trace (one run, two recorders): within 3 %
    assert sum(s["energy_mj"] for s in samples) == pytest.approx(19.48e6, rel=0.01)


def test_power_integration_of_a_real_trace_is_close_to_the_counter() -> None:
    """A fact the fallback relies on: 1 Hz trapezoids on this H100 trace are within 0.3 %."""
    rows = _rows(TRACES / "h100_nvml_matmul.csv")
    counter = int(rows[-1]["energy_mj"]) - int(rows[0]["energy_mj"])
    trapezoid = sum(
        (float(a["power_w"]) + float(b["power_w"]))
        / 2
        * (int(b["timestamp_ms"]) - int(a["timestamp_ms"]))
        for a, b in itertools.pairwise(rows)
    )
    assert abs(trapezoid - counter) / counter < 0.003


def test_process_and_job_columns_become_job_shares() -> None:
    text = (
        "timestamp_ms,gpu,energy_mj,power_limit_w,pid,sm_util_pct,job,tenant\n"
        "1000,0,0,700,,,,\n"
        "2000,0,300000,700,11,75,train-1,acme\n"
        "2000,0,300000,700,12,25,infer-2,beta\n"
        "3000,0,400000,700,,,batch-3,acme\n"
    )
    source = ReplaySource(parse_trace(io.StringIO(text)), speed=0)
    agent = GpuAgent(HostIdentity("a", "h", "s", "DE", "replay"), source, source.labels_of)
    agent.sample(10_000)
    batch = agent.take_batch(0)
    assert batch is not None
    first, second = batch["samples"]
    assert [(j["job_id"], j["tenant"], j["energy_mj"]) for j in first["jobs"]] == [
        ("train-1", "acme", 225_000),
        ("infer-2", "beta", 75_000),
    ]
    assert [(j["job_id"], j["energy_mj"]) for j in second["jobs"]] == [("batch-3", 100_000)]


def test_a_pid_reused_by_another_job_keeps_each_interval_on_its_own_job() -> None:
    text = (
        "timestamp_ms,gpu,energy_mj,power_limit_w,pid,sm_util_pct,job,tenant\n"
        "1000,0,0,700,,,,\n"
        "2000,0,300000,700,11,100,train-1,acme\n"
        "3000,0,500000,700,11,100,train-1,acme\n"
        "4000,0,900000,700,11,100,infer-9,beta\n"  # the OS gave pid 11 to a new job
    )
    source = ReplaySource(parse_trace(io.StringIO(text)), speed=0)
    agent = GpuAgent(HostIdentity("a", "h", "s", "DE", "replay"), source, source.labels_of)
    agent.sample(10_000)
    batch = agent.take_batch(0)
    assert batch is not None
    samples = batch["samples"]
    jobs = [[(j["job_id"], j["tenant"], j["energy_mj"]) for j in x["jobs"]] for x in samples]
    assert jobs == [
        [("train-1", "acme", 300_000)],
        [("train-1", "acme", 200_000)],
        [("infer-9", "beta", 400_000)],
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "trace is empty"),
        ("timestamp_ms,power_w\n1,2\n", "no gpu/index or uuid column"),
        ("timestamp_ms,gpu,temperature_c\n1,0,40\n", "neither energy_mj nor power_w"),
        ("timestamp_ms,gpu,power_w\n", "no rows"),
        ("timestamp_ms,gpu,power_w\n1000,0,50\nnot-a-time,0,50\n", "trace line 3"),
        ("timestamp_ms,gpu,power_w,energy_mj\n1000,0,,\n", "trace line 2: neither"),
    ],
)
def test_bad_traces_say_which_line_and_why(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_trace(io.StringIO(text))


def test_paced_replay_follows_the_trace_clock() -> None:
    wall = [100.0]
    trace = parse_trace(io.StringIO("timestamp_ms,gpu,power_w\n5000,0,1\n6000,0,1\n9000,0,1\n"))
    source = ReplaySource(trace, speed=2.0, wall=lambda: wall[0])
    assert source.clock() == 5.0
    assert [r.t_ms for r in source.read(int(source.clock() * 1000))] == [5000]
    wall[0] += 1.0  # one wall second = two trace seconds
    assert [r.t_ms for r in source.read(int(source.clock() * 1000))] == [6000]
    assert not source.exhausted()
    wall[0] += 1.5
    assert [r.t_ms for r in source.read(int(source.clock() * 1000))] == [9000]
    assert source.exhausted()


def test_a_recorded_trace_replays_to_the_same_energy() -> None:
    sim = SimSource(gpus=2, seed=5)
    out = io.StringIO()
    recorder = RecordingSource(sim, out)
    start = sim.counters()
    for tick in range(30):
        recorder.read(1_000_000 + tick * 1000)
    out.seek(0)
    source = ReplaySource(parse_trace(out), speed=0)
    agent = GpuAgent(
        HostIdentity("a", "h", "s", "DE", "replay"), source, lambda pid: JobLabels("j")
    )
    agent.sample(10**13)
    batch = agent.take_batch(0)
    assert batch is not None
    for uuid, before in start.items():
        published = sum(s["energy_mj"] for s in batch["samples"] if s["gpu_uuid"] == uuid)
        assert published == sim.counters()[uuid] - before
