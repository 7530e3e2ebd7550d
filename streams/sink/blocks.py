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

from schemas.blocks import FLAGS, METHODS, SAMPLE_DTYPE, SHARE_DTYPE, from_block
from schemas.bounds import (
    MAX_COUNT,
    MAX_TIME_MS,
    MIN_TIME_MS,
    Bounds,
    BoundsError,
    check_block_header,
    sample_problem,
)
from schemas.errors import CodecError
from schemas.records import GpuSampleBlock
from streams.sink.shapes import Rejected, Row

SAMPLES = np.dtype(SAMPLE_DTYPE)
SHARES = np.dtype(SHARE_DTYPE)
# margin below the share-sum limit inside which the per-sample check decides (the two
# sums may round differently; the per-sample one is the rule)
_SHARE_SUM_MARGIN = 1e-9


def _corrupt(message: str) -> CodecError:
    return CodecError("corrupt", f"gpu_sample_block: {message}")


def _check(block: GpuSampleBlock) -> None:
    """Refuse a block whose rows contradict its own dictionaries and lengths, as
    :func:`schemas.blocks.from_block` does. Per message, so it reads the few bytes it
    needs by stride (``bytes[offset::row_size]``, C loops) instead of making arrays."""
    rows, shares = block["sample_rows"], block["share_rows"]
    size, share_size = SAMPLES.itemsize, SHARES.itemsize
    if len(rows) % size or len(shares) % share_size:
        raise _corrupt(
            f"row bytes {len(rows)}/{len(shares)} are not whole {size}/{share_size}-byte rows"
        )
    if rows and (
        _u16_max(rows, 0, size) >= len(block["gpus"])
        or max(rows[34::size]) >= len(METHODS)
        or max(rows[35::size]) >> len(FLAGS)
    ):
        raise _corrupt("a sample row's gpu, method or flags is out of range")
    if sum(rows[36::size]) + 256 * sum(rows[37::size]) != len(shares) // share_size:
        raise _corrupt("the share_counts do not add up to the share rows")
    if shares and _u16_max(shares, 0, share_size) >= len(block["jobs"]):
        raise _corrupt("a share row's job is out of range")


def _u16_max(data: bytes, offset: int, stride: int) -> int:
    """The largest little-endian u16 at ``offset`` of each ``stride``-byte row."""
    if max(data[offset + 1 :: stride]):  # an index past 255: rare, read them all
        values = np.frombuffer(data, dtype=np.uint8).reshape(-1, stride)[:, offset : offset + 2]
        return int(values.copy().view("<u2").max())
    return max(data[offset::stride])


def _suspects(labels: Any, rows: Any, shares: Any, where: Any, bounds: Bounds) -> Any:
    """A mask of the rows that may be outside ``bounds`` (every row that is, maybe more).
    ``labels``: (gpus, jobs); ``where``: each row's index into ``gpus``, each share row's
    into ``jobs``, and each share row's sample."""
    gpus, jobs = labels
    gpu, job, owner = where
    gpu_bad = np.array(
        [
            max(len(g["gpu_uuid"]), len(g["gpu_model"]), len(g.get("mig_instance") or ""))
            > bounds.max_text
            or not 0 <= g["gpu_index"] < bounds.max_gpu_index
            for g in gpus
        ],
        dtype=bool,
    )
    most_w = np.array([bounds.power_w(g["gpu_model"]) for g in gpus], dtype=np.float64)
    job_bad = np.array(
        [
            max(len(j["job_id"]), len(j["tenant"]), len(j.get("model") or "")) > bounds.max_text
            for j in jobs
        ],
        dtype=bool,
    )
    seq, start, end, energy = rows["f1"], rows["f2"], rows["f3"], rows["f4"]
    length = end - start  # int64; a wrapped difference is caught by the time bounds
    with np.errstate(all="ignore"):
        watts = energy / np.where(length > 0, length, 1)
        bad = (
            gpu_bad[gpu]
            | (seq < 0)
            | (seq >= MAX_COUNT)
            | (rows["f11"] < 0)
            | (rows["f11"] >= bounds.max_memory_bytes)
            | (start < MIN_TIME_MS)
            | (start > MAX_TIME_MS)
            | (end < MIN_TIME_MS)
            | (end > MAX_TIME_MS)
            | (length < bounds.min_interval_ms)
            | (length > bounds.max_interval_ms)
            | ~((rows["f8"] >= 0.0) & (rows["f8"] <= 1e6))  # NaN fails every comparison
            | ~((rows["f9"] >= 0.0) & (rows["f9"] <= 1e6))
            | ~((rows["f10"] >= 0.0) & (rows["f10"] <= 100.0))
            | ~((rows["f12"] >= -100.0) & (rows["f12"] <= bounds.max_temperature_c))
            | (energy < 0)
            | (energy >= 2**56)  # absurd; and below it 64 shares' int64 sum cannot wrap
            | ~(watts <= bounds.absurd_factor * most_w[gpu])
            | (rows["f7"] > bounds.max_jobs)
        )
        if len(shares):
            share = shares["f1"]
            share_bad = (
                job_bad[job]
                | ~((share >= 0.0) & (share <= 1.0))
                | (shares["f2"] < 0)
                | (shares["f3"] < 0)
                | (shares["f3"] >= MAX_COUNT)
                | (shares["f4"] < 0)
                | (shares["f4"] >= MAX_COUNT)
            )
            n = len(rows)
            bad |= np.bincount(owner, weights=share_bad, minlength=n) > 0
            share_sum = np.bincount(
                owner, weights=np.where(np.isfinite(share), share, 0), minlength=n
            )
            bad |= share_sum > 1.0 + 1e-6 - _SHARE_SUM_MARGIN
            # int64 sums of the shares' energy (a float bincount could round)
            energy_sum = np.zeros(n, dtype=np.int64)
            np.add.at(energy_sum, owner, shares["f2"])
            bad |= energy_sum != energy
        else:
            bad |= energy != 0  # no shares: only an energy of 0 sums to itself
    return bad


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
        _check(typed)
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
        suspects = _suspects((gpus, jobs), rows, shares, where, self.bounds)
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
