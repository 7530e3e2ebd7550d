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


def test_a_batch_is_accepted_for_a_priced_zone_and_source_only() -> None:
    good = INTAKE.batch(batch(zone="DE", source="nvml"))
    assert good["zone"] == "DE"
    assert code_of(lambda: INTAKE.batch(batch(zone="FR", source="nvml"))) == "unknown_zone"
    assert code_of(lambda: INTAKE.batch(batch(zone="DE", source="sim"))) == "source_not_accepted"
    assert code_of(lambda: INTAKE.batch(b"")) == "corrupt"
