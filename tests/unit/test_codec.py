"""The codec: round trips, framing, schema evolution and one clear error type."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import (
    SCHEMA_NAMES,
    Codec,
    ConfluentFraming,
    current_schemas,
    make_codec,
    parse_schema,
    schema_text,
)
from schemas.errors import CodecError
from tests.examples import EXAMPLES

codec = Codec()


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_round_trips(name: Any) -> None:
    record = EXAMPLES[name]
    assert codec.decode(name, codec.encode(name, record)) == record


def test_every_schema_has_an_example_and_field_docs() -> None:
    assert set(EXAMPLES) == set(SCHEMA_NAMES)
    for name in SCHEMA_NAMES:
        for field in _all_fields(json.loads(schema_text(name))):
            assert field.get("doc"), f"{name}.{field['name']} has no doc string"


def _all_fields(schema: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(schema, dict):
        for field in schema.get("fields", []):
            found.append(field)
            found += _all_fields(field["type"])
        if schema.get("type") == "array":
            found += _all_fields(schema["items"])
    elif isinstance(schema, list):
        for branch in schema:
            found += _all_fields(branch)
    return found


def test_single_object_frame_carries_the_writer_fingerprint() -> None:
    data = codec.encode("grid_intensity", EXAMPLES["grid_intensity"])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == current_schemas()["grid_intensity"].fingerprint


def test_defaults_are_filled_when_optional_fields_are_omitted() -> None:
    record = dict(EXAMPLES["grid_intensity"])
    del record["estimation_method"]
    assert (
        codec.decode("grid_intensity", codec.encode("grid_intensity", record))["estimation_method"]
        is None
    )


def test_old_writer_is_read_by_the_new_reader() -> None:
    # v0 of grid_intensity had no estimation_method; today's reader fills the default.
    raw = json.loads(schema_text("grid_intensity"))
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "estimation_method"]
    old = parse_schema("grid_intensity", json.dumps(raw))
    old_record = {k: v for k, v in EXAMPLES["grid_intensity"].items() if k != "estimation_method"}
    old_codec = Codec()
    old_codec._current = {**old_codec._current, "grid_intensity": old}  # an agent built from v0
    data = old_codec.encode("grid_intensity", old_record)

    assert data[2:10] == old.fingerprint != current_schemas()["grid_intensity"].fingerprint
    with pytest.raises(CodecError) as unknown:
        Codec(history=[]).decode("grid_intensity", data)
    assert unknown.value.reason == "unknown_schema"
    assert Codec(history=[old]).decode("grid_intensity", data) == {
        **old_record,
        "estimation_method": None,
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "corrupt"),
        (b"\x00\x01garbage", "corrupt"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown_schema"),
    ],
)
def test_bad_frames_raise_codec_error(data: bytes, reason: str) -> None:
    with pytest.raises(CodecError) as err:
        codec.decode("gpu_sample_batch", data)
    assert err.value.reason == reason


def test_truncated_and_padded_bodies_are_corrupt() -> None:
    data = codec.encode("gpu_sample_batch", EXAMPLES["gpu_sample_batch"])
    for bad in (data[:-7], data + b"\x00\x00"):
        with pytest.raises(CodecError) as err:
            codec.decode("gpu_sample_batch", bad)
        assert err.value.reason == "corrupt"


def test_message_of_another_schema_is_rejected() -> None:
    data = codec.encode("grid_intensity", EXAMPLES["grid_intensity"])
    with pytest.raises(CodecError, match=r"expected llcr\.v1\.GpuSampleBatch") as err:
        codec.decode("gpu_sample_batch", data)
    assert err.value.reason == "wrong_schema"


def test_record_missing_a_required_field_is_rejected() -> None:
    record = dict(EXAMPLES["grid_intensity"])
    del record["zone"]
    with pytest.raises(CodecError, match="grid_intensity") as err:
        codec.encode("grid_intensity", record)
    assert err.value.reason == "invalid_record"


def test_record_with_a_wrong_type_or_unknown_field_is_rejected() -> None:
    for record in (
        {**EXAMPLES["grid_intensity"], "intensity_g_per_kwh": "high"},
        {**EXAMPLES["grid_intensity"], "signal": "mixed"},
        {**EXAMPLES["grid_intensity"], "surprise": 1},
    ):
        with pytest.raises(CodecError):
            codec.encode("grid_intensity", record)


def test_confluent_wire_format_round_trip_and_unknown_id() -> None:
    confluent = make_codec("confluent", {101: "grid_intensity", 102: "dead_letter"})
    data = confluent.encode("grid_intensity", EXAMPLES["grid_intensity"])
    assert data[:5] == b"\x00" + struct.pack(">I", 101)
    assert confluent.decode("grid_intensity", data) == EXAMPLES["grid_intensity"]
    with pytest.raises(CodecError) as err:
        confluent.decode("grid_intensity", b"\x00" + struct.pack(">I", 999) + data[5:])
    assert err.value.reason == "unknown_schema"
    with pytest.raises(CodecError) as err:
        Codec(ConfluentFraming({})).encode("grid_intensity", EXAMPLES["grid_intensity"])
    assert err.value.reason == "unknown_schema"


_sample = st.fixed_dictionaries(
    {
        "gpu_uuid": st.text(max_size=20),
        "gpu_index": st.integers(0, 2**31 - 1),
        "gpu_model": st.text(max_size=30),
        "seq": st.integers(0, 2**63 - 1),
        "start_ms": st.integers(-(2**62), 2**62),
        "end_ms": st.integers(-(2**62), 2**62),
        "energy_mj": st.integers(0, 2**63 - 1),
        "energy_method": st.sampled_from(["counter", "power_integral"]),
        "power_w": st.floats(allow_nan=False),
        "power_limit_w": st.floats(allow_nan=False),
        "utilization_pct": st.floats(0, 100),
        "memory_used_bytes": st.integers(0, 2**63 - 1),
        "temperature_c": st.floats(-50, 150),
        "jobs": st.just([]),
    }
)


@settings(max_examples=60, deadline=None)
@given(samples=st.lists(_sample, max_size=8))
def test_sample_batches_round_trip_exactly(samples: list[dict[str, Any]]) -> None:
    batch = {**EXAMPLES["gpu_sample_batch"], "samples": samples}
    decoded = codec.decode("gpu_sample_batch", codec.encode("gpu_sample_batch", batch))
    expected = [{**s, "mig_instance": None, "flags": []} for s in samples]
    assert decoded["samples"] == expected


@pytest.mark.parametrize("empty", [None, b""])
def test_a_tombstone_or_empty_message_is_corrupt_not_a_crash(empty: Any) -> None:
    with pytest.raises(CodecError) as err:
        codec.decode("gpu_sample_batch", empty)
    assert err.value.reason == "corrupt" and "tombstone" in str(err.value)
