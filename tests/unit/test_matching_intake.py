"""The worker's intake without faust: bytes in, a checked record or a coded rejection."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas.bounds import Bounds
from schemas.codec import Codec
from schemas.errors import RejectedInputError
from streams.matching.intake import Intake
from tests.examples import EXAMPLES

INTAKE = Intake(
    codec=Codec(),
    bounds=Bounds(),
    zones=frozenset({"DE"}),
    accept_sources=frozenset({"nvml"}),
    max_intensity_g_per_kwh=2000.0,
    max_intensity_period_ms=48 * 3_600_000,
)


def code_of(call: Any) -> str:
    with pytest.raises(RejectedInputError) as refused:
        call()
    return refused.value.code


def event(**changes: Any) -> bytes:
    record: Any = copy.deepcopy(EXAMPLES["grid_intensity"])
    record.update(changes)
    return Codec().encode("grid_intensity", record)


def batch(**changes: Any) -> bytes:
    record: Any = copy.deepcopy(EXAMPLES["gpu_sample_batch"])
    record.update(changes)
    return Codec().encode("gpu_sample_batch", record)


def block(**changes: Any) -> bytes:
    record: Any = copy.deepcopy(EXAMPLES["gpu_sample_block"])
    record.update(changes)
    return Codec().encode("gpu_sample_block", record)


def test_an_intensity_event_becomes_the_bins_it_changes() -> None:
    changed = INTAKE.intensity(event(zone="DE"), lambda key: None)
    assert changed and all(key[0] == "DE" for key in changed)


def test_intensity_rejections_carry_their_codes() -> None:
    assert code_of(lambda: INTAKE.intensity(b"\x00junk", lambda k: None)) == "corrupt"
    assert code_of(lambda: INTAKE.intensity(None, lambda k: None)) == "corrupt"  # tombstone
    assert code_of(lambda: INTAKE.intensity(event(zone="FR"), lambda k: None)) == "unknown_zone"
    negative = event(zone="DE", intensity_g_per_kwh=-5.0)
    assert code_of(lambda: INTAKE.intensity(negative, lambda k: None)) == "intensity_negative"
    odd = event(zone="DE", period_end_ms=EXAMPLES["grid_intensity"]["period_start_ms"] + 7)
    assert code_of(lambda: INTAKE.intensity(odd, lambda k: None)) == "unaligned_period"


def test_samples_are_accepted_for_a_priced_zone_and_source_only() -> None:
    good = INTAKE.samples(batch(zone="DE", source="nvml"), 3)
    assert good.header["zone"] == "DE" and good.partition == 3
    assert good.block is not None and good.batch is not None  # v1, packed into a block
    for value in (batch(zone="FR", source="nvml"), block(zone="FR", source="nvml")):
        assert code_of(lambda value=value: INTAKE.samples(value, 0)) == "unknown_zone"
    assert code_of(lambda: INTAKE.samples(batch(zone="DE", source="sim"), 0)) == (
        "source_not_accepted"
    )
    assert code_of(lambda: INTAKE.samples(b"", 0)) == "corrupt"
    assert code_of(lambda: INTAKE.samples(event(zone="DE"), 0)) == "wrong_schema"


def test_a_block_stays_a_block_and_a_corrupt_one_is_refused_whole() -> None:
    good = INTAKE.samples(block(zone="DE", source="nvml"), 0)
    assert good.batch is None and good.block is not None
    assert good.size() == len(EXAMPLES["gpu_sample_batch"]["samples"])
    rows = EXAMPLES["gpu_sample_block"]["sample_rows"]
    cut = block(zone="DE", source="nvml", sample_rows=rows[:-1])  # not whole rows
    assert code_of(lambda: INTAKE.samples(cut, 0)) == "corrupt"
    many = block(zone="DE", source="nvml", gpus=[])  # rows name a GPU the block lacks
    assert code_of(lambda: INTAKE.samples(many, 0)) == "corrupt"


def test_a_batch_that_does_not_pack_keeps_its_samples() -> None:
    record: Any = copy.deepcopy(EXAMPLES["gpu_sample_batch"])
    record.update(zone="DE", source="nvml")
    share = record["samples"][0]["jobs"][0]
    # more shares than a block row's u16 share_count holds: the batch stays dicts, and
    # the per-sample rules refuse that sample (too_many_jobs) and take the others
    record["samples"][0]["jobs"] = [{**share, "energy_mj": 0}] * 65_536
    message = INTAKE.samples(Codec().encode("gpu_sample_batch", record), 0)
    assert message.block is None and len(message.samples()[0]["jobs"]) == 65_536
