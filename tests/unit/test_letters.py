"""schemas/letters.py: one builder, the id rule of dead_letter.avsc, bounded sizes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from schemas.bounds import MAX_DEAD_VALUE_BYTES
from schemas.codec import Codec
from schemas.letters import input_letter, message_letter


def test_a_message_letter_is_named_by_its_position_and_fits_a_request() -> None:
    letter = message_letter(
        "worker.matching",
        "corrupt",
        "corrupt: not Avro",
        topic="llcr.gpu.samples",
        partition=3,
        offset=1200,
        key=b"k" * 5000,
        value=b"v" * (MAX_DEAD_VALUE_BYTES + 10),
        failed_at_ms=7,
        part=":GPU-1:42",
    )
    assert letter["dead_letter_id"] == "llcr.gpu.samples:3:1200:GPU-1:42"
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "llcr.gpu.samples",
        3,
        1200,
    )
    assert len(letter["value"]) == MAX_DEAD_VALUE_BYTES and len(letter["key"] or b"") == 1024
    assert "[value cut from" in letter["reason"]
    Codec().encode("dead_letter", letter)  # a valid record of the schema
    tombstone = message_letter(
        "c", "corrupt", "r", topic="t", partition=0, offset=1, key=None, value=None, failed_at_ms=0
    )
    assert tombstone["value"] == b""


def test_an_input_letter_is_named_by_its_own_id_or_its_content() -> None:
    letter = input_letter(
        "agent.grid", "negative", "value -1", value=b"row", key=None, failed_at_ms=1
    )
    digest = hashlib.sha256(b"negative\0value -1\0row").hexdigest()[:32]
    assert letter["dead_letter_id"] == f"agent.grid:{digest}"
    assert letter["source_topic"] is None and letter["source_offset"] is None
    again = input_letter(
        "agent.grid", "negative", "value -1", value=b"row", key=None, failed_at_ms=9
    )
    assert again["dead_letter_id"] == letter["dead_letter_id"]  # a re-read is the same letter
    order = input_letter(
        "removal", "x", "y", value=b"o", key=b"o-1", failed_at_ms=0, own_id="order:o-1"
    )
    assert order["dead_letter_id"] == "removal:order:o-1"


def test_the_schema_documents_the_rule() -> None:
    schema = json.loads((Path("schemas") / "avro" / "dead_letter.avsc").read_text())
    doc = next(f["doc"] for f in schema["fields"] if f["name"] == "dead_letter_id")
    assert "'<source_topic>:<partition>:<offset>'" in doc and "SHA-256" in doc
