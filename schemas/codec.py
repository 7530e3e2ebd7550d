"""The one Avro codec of llcr: schemas parsed once, framing chosen once.

Framing (see docs/ARCHITECTURE.md, "Message framing"):

* ``single-object`` (default): the Avro specification's single-object encoding,
  ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema +
  the Avro binary body. Self-describing without a registry; any Avro library can read it.
* ``confluent``: the Confluent Schema Registry wire format, ``00`` + 4-byte big-endian
  schema id + body, for deployments that run a registry. Ids come from configuration
  (the registry's ids for our subjects).

Timestamps are plain ``long`` fields named ``*_ms`` (UTC epoch milliseconds), not the
``timestamp-millis`` logical type: fastavro would turn those into ``datetime`` objects,
which is slow on the hot path and against the integer-millisecond core.

Readers resolve old writer schemas (``schemas/avro/history/*.avsc``) to the current
reader schema, so a new consumer reads what an old agent wrote. A message written as
one of a pair of equivalent records is read as the other (:data:`CONVERSIONS`): the
per-sample batch and the columnar block of ``gpu.samples`` (``schemas/blocks.py``).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol, cast, get_args

import fastavro
import fastavro.schema

from schemas.blocks import from_block, to_block
from schemas.errors import CodecError

SchemaName = Literal[
    "gpu_sample_batch",
    "gpu_sample_block",
    "grid_intensity",
    "emissions_hourly",
    "emissions_live",
    "capture_command",
    "capture_telemetry",
    "removal_order",
    "ledger_entry",
    "carbon_signal",
    "dead_letter",
]
SCHEMA_NAMES: tuple[SchemaName, ...] = get_args(SchemaName)

FramingName = Literal["single-object", "confluent"]

#: (written as, read as) -> the conversion of the decoded record; raises CodecError
CONVERSIONS: Mapping[tuple[SchemaName, SchemaName], Any] = {
    ("gpu_sample_block", "gpu_sample_batch"): from_block,
    ("gpu_sample_batch", "gpu_sample_block"): to_block,
}

_SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_CONFLUENT_MAGIC = b"\x00"


@dataclass(frozen=True)
class ParsedSchema:
    """A parsed Avro schema with its identity."""

    name: SchemaName
    full_name: str
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the canonical form


def _fingerprint(raw: dict[str, Any]) -> bytes:
    canonical = fastavro.schema.to_parsing_canonical_form(raw)
    value = int(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"), 16)
    return value.to_bytes(8, "little")


def parse_schema(name: SchemaName, text: str) -> ParsedSchema:
    """Parse .avsc text as a version of schema ``name``."""
    raw: dict[str, Any] = json.loads(text)
    parsed = cast(dict[str, Any], fastavro.parse_schema(raw))
    return ParsedSchema(name, parsed["name"], raw, parsed, _fingerprint(raw))


def schema_text(name: SchemaName) -> str:
    """The .avsc text of the current version of a schema."""
    return (resources.files("schemas") / "avro" / f"{name}.avsc").read_text("utf-8")


@cache
def current_schemas() -> Mapping[SchemaName, ParsedSchema]:
    """Every current schema, parsed once per process."""
    return {name: parse_schema(name, schema_text(name)) for name in SCHEMA_NAMES}


@cache
def historical_schemas() -> tuple[ParsedSchema, ...]:
    """Earlier versions still readable: ``history/<name>.v<N>.avsc``."""
    folder = resources.files("schemas") / "avro" / "history"
    found: list[ParsedSchema] = []
    if not folder.is_dir():  # an install without history: only current writers are read
        return ()
    for entry in folder.iterdir():
        if entry.name.endswith(".avsc"):
            name = cast(SchemaName, entry.name.split(".", 1)[0])
            found.append(parse_schema(name, entry.read_text("utf-8")))
    return tuple(found)


class Framing(Protocol):
    """How a schema's identity is written in front of the Avro body."""

    def header(self, schema: ParsedSchema) -> bytes: ...

    def split(self, data: bytes) -> tuple[bytes, int]:
        """Return the schema key found in the header and the body's offset."""
        ...


class SingleObjectFraming:
    """Avro single-object encoding: C3 01 + 8-byte fingerprint."""

    def header(self, schema: ParsedSchema) -> bytes:
        return _SINGLE_OBJECT_MAGIC + schema.fingerprint

    def split(self, data: bytes) -> tuple[bytes, int]:
        if len(data) < 10 or data[:2] != _SINGLE_OBJECT_MAGIC:
            raise CodecError("corrupt", "not an Avro single-object frame (expected C3 01 header)")
        return data[2:10], 10


@dataclass(frozen=True)
class ConfluentFraming:
    """Confluent wire format: 00 + 4-byte big-endian registry schema id.

    ``ids`` maps the registry's schema ids to our schema names. Several ids may map to
    one name (one per registered version); the first id of a name is used to write.
    """

    ids: Mapping[int, SchemaName]
    _by_name: dict[SchemaName, int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        for schema_id, name in self.ids.items():
            self._by_name.setdefault(name, schema_id)

    def header(self, schema: ParsedSchema) -> bytes:
        schema_id = self._by_name.get(schema.name)
        if schema_id is None:
            raise CodecError(
                "unknown_schema", f"no registry schema id configured for {schema.name!r}"
            )
        return _CONFLUENT_MAGIC + struct.pack(">I", schema_id)

    def split(self, data: bytes) -> tuple[bytes, int]:
        if len(data) < 5 or data[:1] != _CONFLUENT_MAGIC:
            raise CodecError("corrupt", "not a Confluent wire-format frame (expected magic byte 0)")
        return data[1:5], 5


class Codec:
    """Encodes and decodes llcr records. Create one per process and reuse it."""

    def __init__(
        self, framing: Framing | None = None, history: Iterable[ParsedSchema] | None = None
    ) -> None:
        """``history``: earlier writer versions to accept (default: the bundled history/)."""
        self._framing: Framing = framing or SingleObjectFraming()
        self._current = current_schemas()
        self._writers = self._writer_index(historical_schemas() if history is None else history)

    def _writer_index(self, history: Iterable[ParsedSchema]) -> dict[bytes, ParsedSchema]:
        known = [*self._current.values(), *history]
        if isinstance(self._framing, ConfluentFraming):
            index = {}
            for schema_id, name in self._framing.ids.items():
                index[struct.pack(">I", schema_id)] = self._current[name]
            return index
        return {schema.fingerprint: schema for schema in known}

    def encode(self, name: SchemaName, record: Mapping[str, Any]) -> bytes:
        """Frame and serialise ``record`` with the current schema ``name``."""
        schema = self._current[name]
        buf = io.BytesIO()
        buf.write(self._framing.header(schema))
        try:
            fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError, ...
            raise CodecError(
                "invalid_record", f"{name}: record does not match schema: {exc}"
            ) from exc
        return buf.getvalue()

    def decode(self, name: SchemaName, data: bytes | None) -> dict[str, Any]:
        """Decode a framed message expected to carry schema ``name``."""
        writer, data, body = self._writer_of(data, name)
        reader = self._current[name]
        if writer.full_name == reader.full_name:
            return self._body(name, data, body, writer, reader)
        convert = CONVERSIONS.get((writer.name, name))
        if convert is None:
            raise CodecError(
                "wrong_schema", f"message carries {writer.full_name}, expected {reader.full_name}"
            )
        # decoded as written, then converted
        record = self._body(name, data, body, writer, self._current[writer.name])
        return cast(dict[str, Any], convert(record))

    def decode_as_written(
        self, names: tuple[SchemaName, ...], data: bytes | None
    ) -> tuple[SchemaName, dict[str, Any]]:
        """Decode a message that may carry any of ``names``, as it was written (no
        conversion): (its schema name, the record)."""
        writer, data, body = self._writer_of(data, " or ".join(names))
        if writer.name not in names:
            raise CodecError(
                "wrong_schema",
                f"message carries {writer.full_name}, expected one of {', '.join(names)}",
            )
        reader = self._current[writer.name]
        return writer.name, self._body(writer.name, data, body, writer, reader)

    def _writer_of(self, data: bytes | None, expected: str) -> tuple[ParsedSchema, bytes, int]:
        """The writer schema of a framed message, its bytes, and where its body starts."""
        if not data:  # a tombstone (null value) or an empty message
            raise CodecError("corrupt", "empty message: a null value (tombstone) or no bytes")
        key, offset = self._framing.split(data)
        writer = self._writers.get(key)
        if writer is None:
            raise CodecError(
                "unknown_schema", f"unknown writer schema id {key.hex()} (expected {expected})"
            )
        return writer, data, offset

    @staticmethod
    def _body(
        name: SchemaName, data: bytes, offset: int, writer: ParsedSchema, reader: ParsedSchema
    ) -> dict[str, Any]:
        buf = io.BytesIO(data)
        buf.seek(offset)
        try:
            # Resolution only when the writer is an older version: it costs ~10x per record.
            resolve = None if writer is reader else reader.parsed
            record = fastavro.schemaless_reader(buf, writer.parsed, resolve)
        except Exception as exc:  # truncated or garbled bodies raise many types
            raise CodecError("corrupt", f"{name}: undecodable Avro body: {exc!r}") from exc
        if buf.tell() != len(data):
            raise CodecError(
                "corrupt", f"{name}: {len(data) - buf.tell()} trailing bytes after record"
            )
        return cast(dict[str, Any], record)


def make_codec(
    framing: FramingName = "single-object", registry_ids: Mapping[int, str] | None = None
) -> Codec:
    """Build a codec from settings values."""
    if framing == "single-object":
        return Codec(SingleObjectFraming())
    ids: dict[int, SchemaName] = {}
    for schema_id, name in (registry_ids or {}).items():
        if name not in SCHEMA_NAMES:
            raise CodecError(
                "unknown_schema", f"registry id {schema_id} maps to unknown schema {name!r}"
            )
        ids[int(schema_id)] = name
    return Codec(ConfluentFraming(ids))
