"""What the matching worker accepts, decided without faust: a message's bytes become a
checked record, or a :class:`RejectedInputError` whose code becomes its dead letter's.

The worker's faust agents call these and only send the letters; a unit test can feed them
any bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from schemas.blocks import to_block
from schemas.bounds import Bounds, check_batch_header, check_block_header, check_event_fields
from schemas.codec import Codec, SchemaName
from schemas.errors import CodecError, RejectedInputError
from schemas.records import GpuSampleBatch, GpuSampleBlock, GridIntensityEvent, SampleHeader
from streams.columns import SAMPLES, check_block
from streams.matching.columnar import SampleMessage
from streams.matching.prices import BookKey, Price, check_event, merge_event

_SAMPLE_SCHEMAS: tuple[SchemaName, ...] = ("gpu_sample_block", "gpu_sample_batch")


@dataclass(frozen=True)
class Intake:
    """The worker's acceptance rules, from its settings."""

    codec: Codec
    bounds: Bounds
    zones: frozenset[str]  # empty: any zone
    accept_sources: frozenset[str]
    max_intensity_g_per_kwh: float
    max_intensity_period_ms: int

    def _decode(self, schema: SchemaName, value: bytes | None) -> object:
        try:
            return self.codec.decode(schema, value)
        except CodecError as exc:
            raise RejectedInputError(exc.reason, str(exc)) from None

    def _zone(self, zone: str) -> None:
        if self.zones and zone not in self.zones:
            raise RejectedInputError("unknown_zone", zone)

    def intensity(
        self,
        value: bytes | None,
        current: Callable[[BookKey], list[Price | None] | None],
    ) -> dict[BookKey, list[Price | None]]:
        """The hours an intensity event changes, with their new bins (``current`` gives
        an hour's bins as they are)."""
        record = cast(GridIntensityEvent, self._decode("grid_intensity", value))
        check_event_fields(record, self.bounds)
        self._zone(record["zone"])
        check_event(record, self.max_intensity_g_per_kwh, self.max_intensity_period_ms)
        return merge_event(current, record)

    def samples(self, value: bytes | None, partition: int, tag: object = None) -> SampleMessage:
        """A block (v2), or a batch (v1) with the block it packs into, whose header is
        within bounds, for a zone and a source priced here; its samples are checked
        against the host's state (``streams.matching.columnar``). A block whose rows
        contradict its own dictionaries is refused whole (``corrupt``)."""
        try:
            name, record = self.codec.decode_as_written(_SAMPLE_SCHEMAS, value)
            if name == "gpu_sample_block":
                block = cast(GpuSampleBlock, record)
                check_block(block)
                check_block_header(
                    block, len(block["sample_rows"]) // SAMPLES.itemsize, self.bounds
                )
                self._priced_here(block)
                return SampleMessage(block, None, partition, tag)
        except CodecError as exc:
            raise RejectedInputError(exc.reason, str(exc)) from None
        batch = cast(GpuSampleBatch, record)
        check_batch_header(batch, self.bounds)
        self._priced_here(batch)
        try:
            packed: GpuSampleBlock | None = to_block(batch)
        except CodecError:  # a field outside what a block row holds: sample by sample
            packed = None
        return SampleMessage(packed, batch, partition, tag)

    def _priced_here(self, header: SampleHeader) -> None:
        self._zone(header["zone"])
        if header["source"] not in self.accept_sources:
            raise RejectedInputError(
                "source_not_accepted",
                f"{header['source']} samples are not priced here "
                f"(accept_sources: {sorted(self.accept_sources)})",
            )
