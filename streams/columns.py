"""The columnar sample block as numpy arrays: corruption and bounds checks shared by the
sink (``streams.sink.blocks``) and the matching worker (``streams.matching.columnar``).

Pure, no I/O. The rule for a single sample stays :func:`schemas.bounds.sample_problem`;
:func:`suspects` marks every row that *could* fail it (maybe more), so a caller checks
only those one by one, or hands the whole block to the per-sample path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas.blocks import FLAGS, METHODS, SAMPLE_DTYPE, SHARE_DTYPE
from schemas.bounds import MAX_COUNT, MAX_TIME_MS, MIN_TIME_MS, Bounds
from schemas.errors import CodecError
from schemas.records import GpuSampleBlock

SAMPLES = np.dtype(SAMPLE_DTYPE)
SHARES = np.dtype(SHARE_DTYPE)
# margin below the share-sum limit inside which the per-sample check decides (the two
# sums may round differently; the per-sample one is the rule)
_SHARE_SUM_MARGIN = 1e-9


def _corrupt(message: str) -> CodecError:
    return CodecError("corrupt", f"gpu_sample_block: {message}")


class Columns:
    """The fields of a structured array of packed rows, each copied once, when first
    read, into a contiguous array: the row layout is 78 bytes wide and unaligned, and
    every operation on a field view would stride through all of it."""

    def __init__(self, rows: Any) -> None:
        self._rows = rows
        self._columns: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = np.ascontiguousarray(self._rows[name])
        return column

    def __len__(self) -> int:
        return len(self._rows)


def check_block(block: GpuSampleBlock) -> None:
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


def suspects(labels: Any, rows: Any, shares: Any, where: Any, bounds: Bounds) -> Any:
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
                | (shares["f2"] >= 2**56)  # so no sum of max_jobs shares can wrap
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
            counts = rows["f7"]
            has = counts > 0  # owner is sorted: each sample's shares are consecutive
            first = np.cumsum(counts, dtype=np.intp) - counts
            energy_sum[has] = np.add.reduceat(shares["f2"], first[has])
            bad |= energy_sum != energy
        else:
            bad |= energy != 0  # no shares: only an energy of 0 sums to itself
    return bad
