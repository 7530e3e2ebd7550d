"""The sink's columnar mapping of a sample block gives exactly the rows, and the
rejections, of the readable v1 mapping over the same samples (streams/sink/blocks.py)."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.blocks import FLAGS, SHARE_ROW, from_block, to_block
from schemas.bounds import MAX_COUNT, MAX_TIME_MS, MIN_TIME_MS, Bounds
from schemas.errors import CodecError
from streams.sink.blocks import SampleBlocks, block_sample_rows
from streams.sink.rows import SAMPLE_COLUMNS, SOURCE_COLUMNS, Rejected, batch_sample_rows
from tests.examples import EXAMPLES, T0

BOUNDS = Bounds()


def edges(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


def near(x: float) -> st.SearchStrategy[float]:
    """Values at and around ``x``, where a bound decides."""
    return edges(x, math.nextafter(x, -math.inf), math.nextafter(x, math.inf))


#: (where, values): one field of a sample pushed to or past a bound; None: the sample's
#: own field. Two at most per sample, so most samples stay good and the rules that decide
#: are the borderline ones.
EDGES: list[tuple[str, list[Any]]] = [
    ("gpu_uuid", ["u" * 128, "u" * 129]),
    ("gpu_model", ["Mystery", "x" * 129]),
    ("mig_instance", ["m" * 129]),
    ("gpu_index", [4095, 4096, -1]),
    ("seq", [-1, MAX_COUNT - 1, MAX_COUNT, 2**63 - 1, -(2**63)]),
    ("start_ms", [MIN_TIME_MS - 1, MAX_TIME_MS + 1]),
    ("length", [0, -5, 3_600_000, 3_600_001]),
    ("energy_mj", ["absurd", "absurd+1", -3, 2**60]),
    ("power_w", [math.nan, math.inf, -1.0, 1e6, math.nextafter(1e6, 2e6), -0.0]),
    ("power_limit_w", [math.nan, -math.inf, 1e7]),
    ("utilization_pct", [100.0, math.nextafter(100.0, 200.0), -0.5]),
    ("temperature_c", [200.0, math.nextafter(200.0, 300.0), -100.0, -100.5, math.nan]),
    ("memory_used_bytes", [-1, 2**44 - 1, 2**44]),
    ("jobs", [0, 64, 65]),
    ("share", [math.nan, -0.1, 1.0, math.nextafter(1.0, 2.0), 0.5000005, 0.50000049]),
    ("job_energy", [-1, "off by one"]),
    ("job_id", ["j" * 129]),
    ("job_model", ["m" * 129]),
    ("tokens", [-1, MAX_COUNT]),
]


def build_sample(pick: dict[str, Any], jobs: int, rng: random.Random) -> dict[str, Any]:
    """A plausible sample with the fields in ``pick`` set to their edges (EDGES)."""
    start = pick.get("start_ms", rng.randint(T0, T0 + 7_200_000))
    length = pick.get("length", rng.randint(1, 60_000))
    model = pick.get("gpu_model", rng.choice(["NVIDIA H100 80GB HBM3", "A100"]))
    absurd = int(2 * BOUNDS.power_w(model) * max(length, 1))
    energy = pick.get("energy_mj", rng.randint(0, absurd))
    energy = {"absurd": absurd, "absurd+1": absurd + 1}.get(energy, energy)
    jobs = pick.get("jobs", jobs)
    if pick.get("share") in (0.5000005, 0.50000049):
        jobs = max(jobs, 2)  # room for the second share that takes the sum near 1 + 1e-6
    parts = [energy // jobs] * jobs if jobs else []
    if parts:
        parts[0] += energy - sum(parts)
    shares = [rng.uniform(0, 1 / max(jobs, 1))] * jobs
    if jobs and "share" in pick:
        shares[0] = pick["share"]
        if pick["share"] in (0.5000005, 0.50000049):
            shares[1:] = [0.5000006] + [0.0] * (jobs - 2)
    if jobs and "job_energy" in pick:
        parts[0] = -1 if pick["job_energy"] == -1 else parts[0] + 1
    return {
        "gpu_uuid": pick.get("gpu_uuid", rng.choice(["GPU-a", "GPU-b"])),
        "gpu_index": pick.get("gpu_index", rng.randint(0, 8)),
        "gpu_model": model,
        "mig_instance": pick.get("mig_instance", rng.choice([None, "1"])),
        "seq": pick.get("seq", rng.randint(0, 10**6)),
        "start_ms": start,
        "end_ms": start + length,
        "energy_mj": energy,
        "energy_method": rng.choice(["counter", "power_integral"]),
        "flags": [f for f in FLAGS if rng.random() < 0.3],
        "power_w": pick.get("power_w", rng.uniform(0, 1000)),
        "power_limit_w": pick.get("power_limit_w", 700.0),
        "utilization_pct": pick.get("utilization_pct", rng.uniform(0, 100)),
        "memory_used_bytes": pick.get("memory_used_bytes", rng.randint(0, 2**36)),
        "temperature_c": pick.get("temperature_c", rng.uniform(-100, 200)),
        "jobs": [
            {
                "job_id": pick.get("job_id", "slurm:1") if k == 0 else f"slurm:{k + 1}",
                "tenant": rng.choice(["acme", "beta"]),
                "model": pick.get("job_model", rng.choice([None, "llama"])),
                "share": shares[k],
                "energy_mj": parts[k],
                "sharing": rng.choice(["exclusive", "time_sliced", "mig", "none"]),
                "prompt_tokens": pick.get("tokens", rng.randint(0, 10**6)),
                "generation_tokens": rng.randint(0, 10**6),
            }
            for k in range(jobs)
        ],
    }


@st.composite
def samples(draw: st.DrawFn) -> dict[str, Any]:
    edges = dict(draw(st.lists(st.sampled_from(EDGES), max_size=2)))
    pick = {name: draw(st.sampled_from(values)) for name, values in edges.items()}
    return build_sample(pick, draw(st.integers(1, 3)), random.Random(draw(st.integers(0, 2**32))))


def same(got: list[Any], want: list[Any]) -> None:
    """Rows equal value for value (NaN equal to NaN), rejections by code and reason; the
    columnar mapping yields its good rows first, so each kind is compared in order."""
    assert len(got) == len(want)
    kinds = [[r for r in rows if not isinstance(r, Rejected)] for rows in (got, want)]
    kinds += [[r for r in rows if isinstance(r, Rejected)] for rows in (got, want)]
    assert len(kinds[0]) == len(kinds[1])
    for a, b in zip(kinds[0] + kinds[2], kinds[1] + kinds[3], strict=True):
        assert isinstance(a, Rejected) == isinstance(b, Rejected)
        if isinstance(a, Rejected):
            assert (a.code, a.reason, a.row) == (b.code, b.reason, b.row)
        else:
            assert repr(a) == repr(b)  # repr: nan == nan, -0.0 kept apart from 0.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(samples(), max_size=8), st.sampled_from(["host-a", "host-a", "h" * 129]))
def test_block_rows_equal_the_v1_rows_of_the_same_samples(
    drawn: list[dict[str, Any]], host: str
) -> None:
    batch = {**copy.deepcopy(EXAMPLES["gpu_sample_batch"]), "host": host, "samples": drawn}
    block = to_block(batch)  # type: ignore[arg-type]
    same(list(block_sample_rows(block, BOUNDS)), list(batch_sample_rows(from_block(block), BOUNDS)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(samples(), max_size=5), min_size=1, max_size=5))
def test_many_blocks_in_one_write_map_as_each_alone(blocks: list[list[dict[str, Any]]]) -> None:
    """A batch of messages (the sink's write) gives the rows of each message in order,
    each with its own source, and the rejections of each: the dictionaries and bounds
    work across messages as within one."""
    together = SampleBlocks(BOUNDS)
    want_rows: list[Any] = []
    want_rejected: list[Any] = []
    for offset, drawn in enumerate(blocks):
        batch = {**copy.deepcopy(EXAMPLES["gpu_sample_batch"]), "samples": drawn}
        batch["batch_id"] = f"host-a:{offset}"
        block = to_block(batch)  # type: ignore[arg-type]
        together.add(block, (1, offset))
        for row in batch_sample_rows(from_block(block), BOUNDS):
            if isinstance(row, Rejected):
                want_rejected.append(Rejected((*row.row, 1, offset), row.code, row.reason))
            else:
                want_rows.append((*row, 1, offset))
    assert repr(together.rows()) == repr(want_rows)
    assert repr(together.finish()[1]) == repr(want_rejected)  # repr: NaN equals NaN


@pytest.mark.parametrize(
    ("where", "value"),
    [(where, value) for where, values in EDGES for value in values],
)
def test_every_edge_alone_maps_as_the_v1_rows(where: str, value: Any) -> None:
    """Each borderline value on its own, on one to three jobs: the same rows, the same
    rejections (the property above draws them mixed)."""
    for jobs in (1, 2, 3):
        sample = build_sample({where: value}, jobs, random.Random(jobs))
        batch = {**copy.deepcopy(EXAMPLES["gpu_sample_batch"]), "samples": [sample]}
        block = to_block(batch)  # type: ignore[arg-type]
        same(
            list(block_sample_rows(block, BOUNDS)),
            list(batch_sample_rows(from_block(block), BOUNDS)),
        )


def test_the_arrow_table_has_the_table_s_columns_in_order() -> None:
    blocks = SampleBlocks(BOUNDS)
    assert blocks.table().column_names == [*SAMPLE_COLUMNS]  # empty: still the columns
    blocks.add(EXAMPLES["gpu_sample_block"], (3, 41))
    blocks.add(EXAMPLES["gpu_sample_block"], (3, 42))
    table = blocks.table()
    assert table.column_names == [*SAMPLE_COLUMNS, *SOURCE_COLUMNS]
    assert table.column("source_offset").to_pylist() == [41, 42]
    assert [r[-2:] for r in blocks.rows()] == [(3, 41), (3, 42)]


def test_the_test_draws_both_kinds() -> None:
    """The property above sees good rows and rejections (else it could pass empty)."""
    batch = copy.deepcopy(EXAMPLES["gpu_sample_batch"])
    bad = copy.deepcopy(batch)
    bad["samples"][0]["power_w"] = math.nan
    rows = list(block_sample_rows(to_block(batch), BOUNDS))  # type: ignore[arg-type]
    assert len(rows) == 1 and not isinstance(rows[0], Rejected)
    (refused,) = block_sample_rows(to_block(bad), BOUNDS)  # type: ignore[arg-type]
    assert isinstance(refused, Rejected) and refused.code == "out_of_range"


@pytest.mark.parametrize(
    "change",
    [
        {"sample_rows": lambda b: b["sample_rows"][:-1]},
        {"share_rows": lambda b: b["share_rows"][: SHARE_ROW.size]},
        {"share_rows": lambda b: b["share_rows"] + b["share_rows"][: SHARE_ROW.size]},
        {"gpus": lambda b: []},
        {"jobs": lambda b: b["jobs"][:1]},
        {"sample_rows": lambda b: b["sample_rows"][:34] + b"\x02" + b["sample_rows"][35:]},
        {"sample_rows": lambda b: b["sample_rows"][:35] + b"\x80" + b["sample_rows"][36:]},
    ],
)
def test_a_corrupt_block_is_refused_whole_as_from_block_refuses_it(change: dict[str, Any]) -> None:
    block = copy.deepcopy(EXAMPLES["gpu_sample_block"])
    ((field, make),) = change.items()
    block[field] = make(block)
    with pytest.raises(CodecError):
        from_block(block)  # type: ignore[arg-type]
    with pytest.raises(CodecError) as err:
        list(block_sample_rows(block, BOUNDS))
    assert err.value.reason == "corrupt"
