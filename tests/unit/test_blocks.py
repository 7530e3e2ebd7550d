"""The columnar sample block carries exactly what the per-sample batch carries, and the
codec reads each as the other (schemas/blocks.py, docs/topics.md)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.blocks import (
    FLAGS,
    SAMPLE_DTYPE,
    SAMPLE_ROW,
    SHARE_DTYPE,
    SHARE_ROW,
    from_block,
    to_block,
)
from schemas.codec import Codec, current_schemas
from schemas.errors import CodecError
from tests.examples import EXAMPLES

i64 = st.integers(-(2**63), 2**63 - 1)
floats = st.floats(allow_nan=False)  # NaN != NaN: bounds reject it, here it only spoils ==
text = st.text(max_size=12)

jobs = st.fixed_dictionaries(
    {
        "job_id": st.sampled_from(["slurm:1", "slurm:2", "idle", "k8s:ns/pod"]),
        "tenant": st.sampled_from(["acme", "beta", "unattributed"]),
        "model": st.none() | st.sampled_from(["llama-70b", "mistral"]),
        "share": floats,
        "energy_mj": i64,
        "sharing": st.sampled_from(["exclusive", "time_sliced", "mig", "none"]),
        "prompt_tokens": i64,
        "generation_tokens": i64,
    }
)
gpus = st.tuples(
    st.sampled_from(["GPU-a", "GPU-b", "MIG-c"]),
    st.integers(0, 7),
    st.sampled_from(["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]),
    st.none() | st.sampled_from(["1", "2"]),
)
samples = st.builds(
    lambda gpu, rest: {
        "gpu_uuid": gpu[0],
        "gpu_index": gpu[1],
        "gpu_model": gpu[2],
        "mig_instance": gpu[3],
        **rest,
    },
    gpus,
    st.fixed_dictionaries(
        {
            "seq": i64,
            "start_ms": i64,
            "end_ms": i64,
            "energy_mj": i64,
            "energy_method": st.sampled_from(["counter", "power_integral"]),
            "flags": st.lists(st.sampled_from(FLAGS), unique=True).map(
                lambda got: [f for f in FLAGS if f in got]  # a set, in symbol order
            ),
            "power_w": floats,
            "power_limit_w": floats,
            "utilization_pct": floats,
            "memory_used_bytes": i64,
            "temperature_c": floats,
            "jobs": st.lists(jobs, max_size=4),
        }
    ),
)


def batch_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {**EXAMPLES["gpu_sample_batch"], "samples": samples}


@settings(max_examples=200, deadline=None)
@given(st.lists(samples, max_size=30))
def test_a_block_carries_exactly_the_batch(drawn: list[dict[str, Any]]) -> None:
    batch = batch_of(drawn)
    block = to_block(batch)  # type: ignore[arg-type]
    assert len(block["sample_rows"]) == SAMPLE_ROW.size * len(drawn)
    distinct = {(s["gpu_uuid"], s["gpu_index"], s["gpu_model"], s["mig_instance"]) for s in drawn}
    assert len(block["gpus"]) == len(distinct)  # each GPU once
    assert from_block(block) == batch
    codec = Codec()
    assert codec.decode("gpu_sample_batch", codec.encode("gpu_sample_block", block)) == batch
    assert codec.decode("gpu_sample_block", codec.encode("gpu_sample_batch", batch)) == block


def test_the_layout_is_the_documented_one() -> None:
    """The rows are what docs/topics.md and the schema's doc say: 78 and 34 bytes, the
    same as the numpy dtypes a downstream reader would use."""
    assert SAMPLE_ROW.size == 78 and SHARE_ROW.size == 34
    assert numpy.dtype(SAMPLE_DTYPE).itemsize == 78
    assert numpy.dtype(SHARE_DTYPE).itemsize == 34
    block = to_block(EXAMPLES["gpu_sample_batch"])  # type: ignore[arg-type]
    rows = numpy.frombuffer(block["sample_rows"], dtype=SAMPLE_DTYPE)
    sample = EXAMPLES["gpu_sample_batch"]["samples"][0]
    assert rows["f1"][0] == sample["seq"] and rows["f4"][0] == sample["energy_mj"]
    assert rows["f7"][0] == len(sample["jobs"])
    shares = numpy.frombuffer(block["share_rows"], dtype=SHARE_DTYPE)
    assert list(shares["f2"]) == [j["energy_mj"] for j in sample["jobs"]]
    assert [block["jobs"][i]["job_id"] for i in shares["f0"]] == ["slurm:123", "slurm:124"]


def corrupted(**change: Any) -> dict[str, Any]:
    block = copy.deepcopy(EXAMPLES["gpu_sample_block"])
    block.update(change)
    return block


ROW = EXAMPLES["gpu_sample_block"]["sample_rows"]
SHARES = EXAMPLES["gpu_sample_block"]["share_rows"]


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (corrupted(sample_rows=ROW[:-1]), "not whole"),
        (corrupted(share_rows=SHARES + b"\0"), "not whole"),
        (corrupted(gpus=[]), "gpu 0 of 0"),
        (corrupted(jobs=EXAMPLES["gpu_sample_block"]["jobs"][:1]), "job 1 of 1"),
        (corrupted(share_rows=SHARES[: SHARE_ROW.size]), "more share rows"),
        (corrupted(share_rows=SHARES + SHARES[: SHARE_ROW.size]), "left over"),
        (corrupted(sample_rows=ROW[:34] + b"\x05" + ROW[35:]), "method 5"),
        (corrupted(sample_rows=ROW[:35] + b"\x80" + ROW[36:]), "flags 128"),
    ],
)
def test_a_block_that_contradicts_itself_is_corrupt(block: dict[str, Any], why: str) -> None:
    with pytest.raises(CodecError, match=why) as err:
        from_block(block)  # type: ignore[arg-type]
    assert err.value.reason == "corrupt"
    codec = Codec()
    with pytest.raises(CodecError, match=why):  # the codec says the same to a reader
        codec.decode("gpu_sample_batch", codec.encode("gpu_sample_block", block))


def test_a_batch_that_does_not_fit_the_rows_cannot_be_packed() -> None:
    batch = copy.deepcopy(EXAMPLES["gpu_sample_batch"])
    batch["samples"][0]["jobs"] *= 70_000 // 2  # more shares than a u16 counts
    with pytest.raises(CodecError, match="cannot pack"):
        to_block(batch)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sample_format", "schema"), [("block", "gpu_sample_block"), ("batch", "gpu_sample_batch")]
)
def test_the_agent_publishes_blocks_unless_told_to_write_batches(
    sample_format: str, schema: str
) -> None:
    from agents.gpu.run import sample_encoder
    from agents.settings import GpuAgentSettings

    assert GpuAgentSettings.model_fields["sample_format"].default == "block"
    codec = Codec()
    data = sample_encoder(codec, sample_format)(EXAMPLES["gpu_sample_batch"])  # type: ignore[arg-type]
    assert data[2:10] == current_schemas()[schema].fingerprint  # type: ignore[index]
    assert codec.decode("gpu_sample_batch", data) == EXAMPLES["gpu_sample_batch"]


def test_the_reader_in_docs_topics_md_decodes_a_block_without_llcr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The snippet docs/topics.md gives a downstream consumer works as written."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "topics.md").read_text("utf-8")
    snippet = text.split("Reading one without llcr", 1)[1].split("```python\n", 1)[1]
    snippet = snippet.split("```", 1)[0]
    monkeypatch.chdir(root / "schemas" / "avro")
    batch = EXAMPLES["gpu_sample_batch"]
    scope: dict[str, Any] = {"message_value": Codec().encode("gpu_sample_block", to_block(batch))}  # type: ignore[arg-type]
    exec(snippet, scope)
    assert scope["gpu_uuid"] == [s["gpu_uuid"] for s in batch["samples"]]
    assert list(scope["energy_mj"]) == [s["energy_mj"] for s in batch["samples"]]
    assert list(scope["owner"]) == [0] * len(batch["samples"][0]["jobs"])
