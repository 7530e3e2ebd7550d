"""A columnar sample block -> ``gpu_samples`` rows, column by column (pure, no I/O).

The row mapping of a v1 batch (:func:`streams.sink.rows.batch_sample_rows`) reads every
sample as a dict; this one reads the block's rows with ``numpy.frombuffer`` and builds
each column with one vectorised step (the GPU and job labels by index into the block's
dictionaries), then zips them into rows. The bounds are checked the same way: a
vectorised test marks every row that *could* be outside them, and only those rows get
the per-sample check (:func:`schemas.bounds.sample_problem`), on the sample as
:func:`schemas.blocks.from_block` reads it. The rows and the rejections are the same as
the v1 mapping's for the same samples (tests/unit/test_sink_blocks.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyarrow as pa

from schemas.blocks import FLAGS, METHODS, from_block
from schemas.bounds import Bounds, BoundsError, check_block_header, sample_problem
from schemas.records import GpuSampleBlock
from streams.columns import SAMPLES, SHARES, check_block
from streams.columns import suspects as row_suspects
from streams.sink.shapes import Rejected, Row


def block_sample_rows(block: Mapping[str, Any], bounds: Bounds) -> Iterator[Row]:
    """The rows of one block: the good ones (as :meth:`SampleBlocks.rows`), then the
    rejected ones."""
    blocks = SampleBlocks(bounds)
    blocks.add(block)
    yield from blocks.rows()
    yield from blocks.finish()[1]


class _Interned:
    """Strings numbered in first-seen order: an Arrow dictionary and its indices."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def of(self, values: list[str]) -> Any:
        ids = self.ids
        return np.array([ids.setdefault(v, len(ids)) for v in values], dtype=np.int32)

    def array(self, indices: Any) -> Any:
        return pa.DictionaryArray.from_arrays(
            pa.array(indices, type=pa.int32()), pa.array(list(self.ids), type=pa.string())
        )


@dataclass
class _Part:
    """One message's block, checked for corruption; its bounds are checked per batch."""

    block: GpuSampleBlock
    samples: int
    header: BoundsError | None  # the header outside the bounds: every sample refused
    source: tuple[int, ...]  # partition, offset (the sink adds them)


class SampleBlocks:
    """The ``gpu_samples`` rows of many blocks, kept as the blocks' own arrays. The
    bounds are checked, and one Arrow table made, once for all of them (:meth:`finish`):
    no Python object per sample, and a few array operations per batch, not per message."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self._parts: list[_Part] = []
        self._done: tuple[Any, list[Rejected]] | None = None
        self.size = 0  # samples added (kept or to be rejected)

    def add(self, block: Mapping[str, Any], source: tuple[int, ...] = ()) -> None:
        """Take the samples of ``block`` (``source``: the partition and offset each of its
        rows records). A corrupt block raises ``CodecError`` and adds nothing."""
        typed = cast(GpuSampleBlock, block)
        check_block(typed)
        samples = len(typed["sample_rows"]) // SAMPLES.itemsize
        header: BoundsError | None = None
        try:
            check_block_header(typed, samples, self.bounds)
        except BoundsError as exc:
            header = exc
        if samples:
            self._parts.append(_Part(typed, samples, header, source))
            self.size += samples
            self._done = None

    def finish(self) -> tuple[Any, list[Rejected]]:
        """(the Arrow table of the samples within the bounds, a :class:`Rejected` row, its
        source columns included, for each one outside them, as the v1 mapping rejects it);
        computed once, so a retried insert inserts the same."""
        if self._done is None:
            self._done = self._finish()
        return self._done

    def _finish(self) -> tuple[Any, list[Rejected]]:
        parts = self._parts
        # every message's rows in one array each: one join, one frombuffer
        rows = np.frombuffer(b"".join(p.block["sample_rows"] for p in parts), dtype=SAMPLES)
        shares = np.frombuffer(b"".join(p.block["share_rows"] for p in parts), dtype=SHARES)
        per_part = np.array([p.samples for p in parts], dtype=np.intp)
        part_of = np.repeat(np.arange(len(parts)), per_part)
        owner = np.repeat(np.arange(len(rows)), rows["f7"].astype(np.intp))
        gpus = [g for p in parts for g in p.block["gpus"]]
        jobs = [j for p in parts for j in p.block["jobs"]]
        gpu = rows["f0"].astype(np.intp) + _starts([len(p.block["gpus"]) for p in parts])[part_of]
        job_starts = _starts([len(p.block["jobs"]) for p in parts])
        job = shares["f0"].astype(np.intp) + job_starts[part_of[owner]]
        where = (gpu, job, owner)
        suspects = row_suspects((gpus, jobs), rows, shares, where, self.bounds)
        suspects |= np.array([p.header is not None for p in parts], dtype=bool)[part_of]
        rejected: list[Rejected] = []
        if suspects.any():
            keep = self._judge(np.flatnonzero(suspects), part_of, per_part, rejected)
            if not keep.all():
                rows, shares = rows[keep], shares[keep[owner]]
                gpu, job, part_of = gpu[keep], job[keep[owner]], part_of[keep]
        table = _table(parts, rows, shares, (gpu, job, part_of), (gpus, jobs))
        return table, rejected

    def _judge(self, suspects: Any, part_of: Any, per_part: Any, rejected: list[Rejected]) -> Any:
        """Check the suspect rows one by one (as the v1 mapping checks every row); the
        rows to keep."""
        keep = np.ones(int(per_part.sum()), dtype=bool)
        first = _starts(per_part.tolist())
        samples: dict[int, list[Any]] = {}
        for i in suspects.tolist():
            k = int(part_of[i])
            part = self._parts[k]
            if k not in samples:
                samples[k] = from_block(part.block)["samples"]
            sample = samples[k][i - int(first[k])]
            problem = part.header or sample_problem(sample, self.bounds)
            if problem is not None:
                keep[i] = False
                whole = json.dumps(sample, sort_keys=True, default=str)
                block = part.block
                kept = (block["host"], sample["gpu_uuid"], sample["seq"], block["batch_id"])
                rejected.append(Rejected((*kept, whole, *part.source), problem.code, str(problem)))
        return keep

    def parts(self) -> list[tuple[GpuSampleBlock, tuple[int, ...]]]:
        """Each block taken, with its source."""
        return [(p.block, p.source) for p in self._parts]

    def table(self) -> Any:
        """The Arrow table of :meth:`finish`."""
        return self.finish()[0]

    def rows(self) -> list[Row]:
        """The kept samples as row tuples, as the v1 mapping makes them (times in ms)."""
        table = self.table()
        for name in ("start", "end", "published_at"):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table.column(i).cast(pa.int64()))
        return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


def _table(parts: list[_Part], rows: Any, shares: Any, where: Any, labels: Any) -> Any:
    """The Arrow table of the kept rows, columns in ``SAMPLE_COLUMNS`` order (and the
    source columns when the parts carry them)."""
    gpu, job, part_of = where
    gpus, jobs = labels
    names: dict[str, Any] = {}
    for name in _HEAD[:-1]:
        head = _Interned()
        names[name] = head.array(head.of([p.block[name] for p in parts])[part_of])  # type: ignore[literal-required]
    names["gpu_uuid"] = _labelled([g["gpu_uuid"] for g in gpus], gpu)
    # int64 first: an entry only rejected rows used may be out of the uint16 range
    indexes = np.array([g["gpu_index"] for g in gpus], dtype=np.int64)
    chosen = indexes[gpu] if len(gpus) else gpu
    names["gpu_index"] = pa.array(chosen.astype(np.uint16))
    names["gpu_model"] = _labelled([g["gpu_model"] for g in gpus], gpu)
    names["mig_instance"] = _labelled([g.get("mig_instance") or "" for g in gpus], gpu)
    names["seq"] = pa.array(rows["f1"].astype(np.uint64))
    names["start"] = pa.array(rows["f2"], type=_MS)
    names["end"] = pa.array(rows["f3"], type=_MS)
    names["energy_mj"] = pa.array(rows["f4"])
    names["energy_method"] = pa.DictionaryArray.from_arrays(
        pa.array(rows["f5"].astype(np.int32)), pa.array(list(METHODS))
    )
    bits = (rows["f6"][:, None] >> np.arange(len(FLAGS))) & 1
    names["flags"] = pa.ListArray.from_arrays(
        _offsets(bits.sum(axis=1)),
        pa.DictionaryArray.from_arrays(
            pa.array(np.nonzero(bits)[1].astype(np.int32)), pa.array(list(FLAGS))
        ),
    )
    names["power_w"] = pa.array(rows["f8"])
    names["power_limit_w"] = pa.array(rows["f9"])
    names["utilization_pct"] = pa.array(rows["f10"])
    names["memory_used_bytes"] = pa.array(rows["f11"].astype(np.uint64))
    names["temperature_c"] = pa.array(rows["f12"])
    offsets = _offsets(rows["f7"])

    def listed(values: Any) -> Any:
        return pa.ListArray.from_arrays(offsets, values)

    names["job_ids"] = listed(_labelled([j["job_id"] for j in jobs], job))
    names["job_tenants"] = listed(_labelled([j["tenant"] for j in jobs], job))
    names["job_models"] = listed(_labelled([j.get("model") or "" for j in jobs], job))
    names["job_shares"] = listed(pa.array(shares["f1"]))
    names["job_energy_mj"] = listed(pa.array(shares["f2"]))
    names["job_prompt_tokens"] = listed(pa.array(shares["f3"].astype(np.uint64)))
    names["job_generation_tokens"] = listed(pa.array(shares["f4"].astype(np.uint64)))
    published = np.array([p.block["published_at_ms"] for p in parts], dtype=np.int64)
    names["published_at"] = pa.array(published[part_of], type=_MS)
    if parts and parts[0].source:
        sources = np.array([p.source for p in parts], dtype=np.int64)
        names["source_partition"] = pa.array(sources[:, 0].astype(np.int32)[part_of])
        names["source_offset"] = pa.array(sources[:, 1][part_of])
    return pa.table(names)


def _labelled(values: list[str], index: Any) -> Any:
    """An Arrow dictionary column: ``values[index]`` for each row, each string once."""
    interned = _Interned()
    return interned.array(interned.of(values)[index] if values else index.astype(np.int32))


def _starts(sizes: list[int]) -> Any:
    """Where each of consecutive pieces of ``sizes`` starts."""
    out = np.zeros(len(sizes), dtype=np.intp)
    if sizes:
        np.cumsum(sizes[:-1], out=out[1:])
    return out


_HEAD = ("host", "site", "zone", "agent_id", "source", "batch_id", "published_at_ms")
_MS = pa.timestamp("ms", tz="UTC")
_SAMPLE_NUMBERS = (
    ("power_w", "f8"),
    ("power_limit_w", "f9"),
    ("utilization_pct", "f10"),
)


def _offsets(counts: Any) -> Any:
    """List offsets (int32) for lists of ``counts`` elements."""
    out = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=out[1:])
    return pa.array(out)
