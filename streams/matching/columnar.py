"""The matching ingest over arrays: a batch of sample blocks applied to host states at once.

The per-sample path (:func:`streams.matching.admission.check_sample`, then
:func:`streams.matching.lifecycle.ingest`) stays the rule and the readable reference.
This module applies a host's blocks of one ``take_events`` batch with numpy instead,
**only when the per-sample path would apply every one of their samples**:

* every row is within the bounds (:func:`streams.columns.suspects` marks none);
* every sample is in time (not in the future, not too old, not behind the retention
  horizon of the watermark the batch ends with);
* every sample is fresh: its sequence number is applied to none of the hours it touches,
  its time overlaps no time applied before, and no two of the batch's samples of a GPU
  share a sequence number or time;
* the host stays within its GPU, fragment and jobs-per-hour limits, counted so that no
  intermediate state of the per-sample path could have passed them.

Then the order of the samples no longer matters: the state after them is sums and set
unions. Integer mJ (split between hours by :func:`schemas.units.largest_remainder`, the
same call) and sequence sets come out identical, and float sums differ only by the order
of addition (tests/unit/test_matching_columnar.py holds both paths to that on random
streams). A host whose blocks fail any condition goes the per-sample way, message by
message, so duplicates, replays and overlaps are decided exactly as they always were.

Pure: no I/O, no faust. Every value stored in a state is a Python int, float or str
(never a numpy scalar), so a state pickles as it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.blocks import from_block
from schemas.bounds import Bounds
from schemas.errors import RejectedInputError
from schemas.records import GpuSample, GpuSampleBatch, GpuSampleBlock
from schemas.units import HOUR_MS, largest_remainder
from streams.columns import SAMPLES, SHARES, suspects
from streams.matching.admission import check_sample
from streams.matching.core import BIN_MS, BINS, GpuState, HourEnergy, HourKey, SeqSet
from streams.matching.lifecycle import Emitted, HostState, Policy, ingest


@dataclass
class SampleMessage:
    """One accepted message of ``gpu.samples``: its block, or (a v1 batch that does not
    pack into one) its batch; the samples partition it came from; and the caller's tag
    (the worker's faust event), handed back with each rejected sample."""

    block: GpuSampleBlock | None
    batch: GpuSampleBatch | None
    partition: int
    tag: Any = None

    @property
    def header(self) -> GpuSampleBlock | GpuSampleBatch:
        header = self.block if self.block is not None else self.batch
        assert header is not None
        return header

    def samples(self) -> list[GpuSample]:
        if self.batch is not None:
            return self.batch["samples"]
        assert self.block is not None
        return from_block(self.block)["samples"]


@dataclass
class Outcome:
    """What a batch did: samples applied (by the arrays, of them), duplicates, and each
    rejected sample with its message and reason."""

    applied: int = 0
    vectorised: int = 0
    duplicates: int = 0
    rejected: list[tuple[SampleMessage, GpuSample, RejectedInputError]] = field(
        default_factory=list
    )


def ingest_messages(
    states: dict[bytes, HostState],
    touched: dict[bytes, HostState],
    messages: Sequence[SampleMessage],
    *,
    now_ms: int,
    sample_now_ms: int,
    policy: Policy,
) -> Outcome:
    """Apply ``messages`` (in their order) to the host states, creating hosts as needed;
    every host they touch is added to ``touched``. ``now_ms`` is the clock (a host's last
    contact), ``sample_now_ms`` the clock the samples' times are checked against."""
    out = Outcome()
    by_host: dict[str, list[SampleMessage]] = {}
    for message in messages:
        by_host.setdefault(message.header["host"], []).append(message)
    for host, mine in by_host.items():
        key = host.encode()
        state = touched.get(key) or states.get(key)
        if state is None:
            state = states[key] = HostState(host)
        touched[key] = state
        state.partition = mine[-1].partition
        state.last_seen_ms = now_ms
        applied = None
        if all(m.block is not None for m in mine):
            applied = ingest_blocks(state, mine, sample_now_ms, policy)
        if applied is not None:
            out.applied += applied
            out.vectorised += applied
            continue
        for message in mine:
            ingest_one_by_one(state, message, sample_now_ms, policy, out)
    return out


def ingest_one_by_one(
    state: HostState, message: SampleMessage, now_ms: int, policy: Policy, out: Outcome
) -> None:
    """The per-sample path: check each sample against the state as it stands, apply it."""
    header = message.header
    zone, site = header["zone"], header["site"]
    watermark = state.watermark_ms  # kept up to date here, not recomputed per sample
    for sample in message.samples():
        rejection = check_sample(sample, state, now_ms, policy, watermark)
        if rejection is not None:
            out.rejected.append((message, sample, rejection))
        elif ingest(state, zone, site, sample):
            out.applied += 1
            watermark = max(watermark, sample["end_ms"])
        else:
            out.duplicates += 1


def ingest_blocks(
    state: HostState, messages: Sequence[SampleMessage], now_ms: int, policy: Policy
) -> int | None:
    """Apply every sample of the blocks of ``messages`` (one host's, in order) with
    arrays: the number applied, or None, having changed nothing, when the per-sample
    path could decide any sample otherwise (module docstring)."""
    blocks = [m.block for m in messages if m.block is not None]
    batch = _Batch.of(blocks, policy)
    if batch is None:
        return None
    if batch.n == 0:
        return 0
    plan = batch.plan(state, now_ms, policy)
    if plan is None:
        return None
    batch.apply(state, plan, [m.header for m in messages])
    return batch.n


def _ragged(counts: Any) -> Any:
    """0, 1, ..., c - 1 for each count c, concatenated."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    return np.arange(total) - np.repeat(ends - counts, counts)


def _starts(sizes: Sequence[int]) -> Any:
    out = np.zeros(len(sizes), dtype=np.intp)
    if len(sizes) > 1:
        np.cumsum(sizes[:-1], out=out[1:])
    return out


class _Groups:
    """Ids 0..k-1 sorted once: per-id sums, maxima and member slices."""

    def __init__(self, ids: Any) -> None:
        self.order = np.argsort(ids, kind="stable")  # members in their original order
        ordered = ids[self.order]
        self.first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])[: len(ids)]
        self.ids = ordered[self.first]
        self.bounds = np.r_[self.first, len(ids)]

    def sum(self, values: Any) -> Any:
        if not len(self.first):
            return values[:0]
        return np.add.reduceat(values[self.order], self.first)

    def max(self, values: Any) -> Any:
        if not len(self.first):
            return values[:0]
        return np.maximum.reduceat(values[self.order], self.first)

    def labels(self) -> Any:
        """Each member's group number (0..k-1, in id order)."""
        out = np.empty(len(self.order), dtype=np.intp)
        out[self.order] = np.repeat(np.arange(len(self.ids)), np.diff(self.bounds))
        return out

    def members(self, k: int) -> Any:
        return self.order[self.bounds[k] : self.bounds[k + 1]]


@dataclass
class _Plan:
    """What :meth:`_Batch.apply` writes, decided before anything is written."""

    new_gpus: list[int]
    contiguous: list[bool]  # per (GPU, hour) group: its sequences extend the run in order


@dataclass
class _Batch:
    """One host's blocks as arrays: samples, their hour pieces and the pieces' job shares."""

    rows: Any
    shares: Any
    owner: Any  # each share row's sample
    block_of: Any  # each sample's block
    gpu: Any  # each sample's GPU (index into uuids)
    jk: Any  # each share row's (job_id, tenant) (index into job_keys)
    uuids: list[str]
    gpu_refs: list[dict[str, Any]]  # each GPU's first dictionary entry used by a row
    gpu_block: list[int]  # the block each GPU first appears in
    job_keys: list[tuple[str, str]]
    share_model: Any  # each share row's model (index into models; -1: none)
    models: list[str]
    # made by _pieces: hour pieces of the samples, and share pieces (a share row per
    # piece of its sample), grouped by (GPU, hour) and by (GPU, job, hour)
    piece_count: Any = None
    piece_sample: Any = None
    piece_hour: Any = None
    piece_a: Any = None
    piece_b: Any = None
    piece_group: Any = None
    groups: Any = None
    sp_share: Any = None
    sp_piece: Any = None
    sp_first: Any = None
    accs: Any = None
    n_keys: int = 1

    @property
    def n(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, blocks: Sequence[GpuSampleBlock], policy: Policy) -> _Batch | None:
        rows = np.frombuffer(b"".join(b["sample_rows"] for b in blocks), dtype=SAMPLES)
        shares = np.frombuffer(b"".join(b["share_rows"] for b in blocks), dtype=SHARES)
        per_block = [len(b["sample_rows"]) // SAMPLES.itemsize for b in blocks]
        block_of = np.repeat(np.arange(len(blocks)), per_block)
        owner = np.repeat(np.arange(len(rows)), rows["f7"].astype(np.intp))
        gpus = [g for b in blocks for g in b["gpus"]]
        jobs = [j for b in blocks for j in b["jobs"]]
        gpu_entry = rows["f0"].astype(np.intp) + _starts([len(b["gpus"]) for b in blocks])[block_of]
        job_starts = _starts([len(b["jobs"]) for b in blocks])
        job_entry = shares["f0"].astype(np.intp) + job_starts[block_of[owner]]
        where = (gpu_entry, job_entry, owner)
        if len(rows) and suspects((gpus, jobs), rows, shares, where, policy.bounds).any():
            return None
        for block in blocks:  # a GPU listed twice in one block: the per-sample path
            if len({g["gpu_uuid"] for g in block["gpus"]}) != len(block["gpus"]):
                return None
        uuid_index: dict[str, int] = {}
        entry_gpu = np.array(
            [uuid_index.setdefault(g["gpu_uuid"], len(uuid_index)) for g in gpus], dtype=np.intp
        )
        gpu = entry_gpu[gpu_entry] if gpus else gpu_entry
        firsts: Any = np.unique(gpu, return_index=True)[1] if len(rows) else []
        gpu_refs: list[dict[str, Any]] = [{}] * len(uuid_index)
        gpu_block = [0] * len(uuid_index)
        for row in np.asarray(firsts).tolist():
            gpu_refs[int(gpu[row])] = dict(gpus[int(gpu_entry[row])])
            gpu_block[int(gpu[row])] = int(block_of[row])
        key_index: dict[tuple[str, str], int] = {}
        model_index: dict[str, int] = {}
        entry_jk, entry_model = [], []
        for j in jobs:
            entry_jk.append(key_index.setdefault((j["job_id"], j["tenant"]), len(key_index)))
            model = j.get("model")
            entry_model.append(model_index.setdefault(model, len(model_index)) if model else -1)
        jk = np.array(entry_jk, dtype=np.intp)[job_entry] if jobs else job_entry
        share_model = np.array(entry_model, dtype=np.intp)[job_entry] if jobs else job_entry
        return cls(
            rows,
            shares,
            owner,
            block_of,
            gpu,
            jk,
            list(uuid_index),
            gpu_refs,
            gpu_block,
            list(key_index),
            share_model,
            list(model_index),
        )

    # ------------------------------------------------------------ pieces and groups

    def _pieces(self) -> None:
        """Each sample cut at hour boundaries; pieces grouped by (GPU, hour); each share
        row repeated per piece of its sample ("share pieces"), grouped by (GPU, job, hour)."""
        start, end = self.rows["f2"], self.rows["f3"]
        first = start // HOUR_MS
        count = (end - 1) // HOUR_MS - first + 1
        sample = np.repeat(np.arange(self.n), count)
        hour = (first[sample] + _ragged(count)) * HOUR_MS
        self.piece_count = count
        self.piece_sample = sample
        self.piece_hour = hour
        self.piece_a = np.maximum(start[sample], hour)
        self.piece_b = np.minimum(end[sample], hour + HOUR_MS)
        hours = hour // HOUR_MS
        low = int(hours.min())
        span = int(hours.max()) - low + 1
        self.groups = _Groups(self.gpu[sample] * span + (hours - low))
        group_of_piece = self.groups.labels()
        self.piece_group = group_of_piece
        # share pieces
        piece_first = _starts(count.tolist())
        per_share = count[self.owner]
        share = np.repeat(np.arange(len(self.shares)), per_share)
        piece = piece_first[self.owner][share] + _ragged(per_share)
        self.sp_share, self.sp_piece = share, piece
        self.sp_first = _starts(per_share.tolist())
        n_keys = max(len(self.job_keys), 1)
        self.accs = _Groups(group_of_piece[piece] * n_keys + self.jk[share])
        self.n_keys = n_keys

    def plan(self, state: HostState, now_ms: int, policy: Policy) -> _Plan | None:
        """The conditions of the module docstring, against ``state``; None when one fails."""
        new_gpus = self._in_time_and_apart(state, now_ms, policy)
        if new_gpus is None:
            return None
        self._pieces()
        acc_group = self.accs.ids // self.n_keys
        acc_jk = self.accs.ids % self.n_keys
        contiguous = []
        for k in range(len(self.groups.ids)):
            joined = self._fresh_and_within(state, k, acc_jk[acc_group == k], policy.bounds)
            if joined is None:
                return None
            contiguous.append(joined)
        return _Plan(new_gpus, contiguous)

    def _in_time_and_apart(self, state: HostState, now_ms: int, policy: Policy) -> list[int] | None:
        """The GPUs new to the host, when every sample is in time, the host stays within
        its GPUs, and no two samples of a GPU share time or a sequence number; else None."""
        seq, start, end = self.rows["f1"], self.rows["f2"], self.rows["f3"]
        late = start < max(state.watermark_ms, int(end.max())) - policy.retention_ms
        old = now_ms - end > policy.max_age_ms if policy.max_age_ms is not None else False
        # an empty sample applies nothing (per sample: a duplicate)
        if ((end <= start) | (end - now_ms > policy.future_ms) | old | late).any():
            return None
        new_gpus = [i for i in np.unique(self.gpu).tolist() if self.uuids[i] not in state.gpus]
        if len(state.gpus) + len(new_gpus) > policy.bounds.max_gpus_per_host:
            return None
        for a, b in ((start, end), (seq, seq + 1)):
            order = np.lexsort((a, self.gpu))
            same = self.gpu[order][1:] == self.gpu[order][:-1]
            if (same & (a[order][1:] < b[order][:-1])).any():
                return None
        return new_gpus

    def _fresh_and_within(self, state: HostState, k: int, jks: Any, bounds: Bounds) -> bool | None:
        """For (GPU, hour) group ``k``: None when a piece's sequence or time was applied
        before, or the hour could pass its fragment or job limits on the way; else whether
        its sequences extend the hour's run in order (``jks``: the group's job keys)."""
        members = self.groups.members(k)
        uuid = self.uuids[int(self.gpu[self.piece_sample[members[0]]])]
        hour = int(self.piece_hour[members[0]])
        seqs = self.rows["f1"][self.piece_sample[members]]
        gpu = state.gpus.get(uuid)
        applied = (gpu.applied.get(hour) if gpu is not None else None) or SeqSet()
        a, b = self.piece_a[members], self.piece_b[members]
        spans, extra = applied.spans, applied.extra
        if (
            (spans and int(a.min()) < spans[-1][1])  # before or inside applied time
            or ((seqs >= applied.lo) & (seqs < applied.upto)).any()
            or (extra and np.isin(seqs, np.fromiter(extra, np.int64, len(extra))).any())
        ):
            return None
        empty = applied.lo == applied.upto and not extra
        joined = bool((np.diff(seqs) == 1).all()) and (empty or int(seqs[0]) == applied.upto)
        # fragments: the most spans and stragglers any intermediate state can hold
        most_spans = len(spans) + len(members)
        if bool((np.diff(a) >= 0).all()):  # in time order: the count only grows
            runs = 1 + int((a[1:] != b[:-1]).sum())
            most_spans = len(spans) + runs - int(bool(spans) and a[0] == spans[-1][1])
        most_extra = len(extra) if joined else len(extra) + len(members)
        if max(most_spans, most_extra) >= bounds.max_fragments_per_gpu_hour:
            return None
        # jobs: the hour's keys and every key the batch adds to it
        keys = state.keys_by_hour.get(hour, {}).get(uuid, {})
        known = {(key.job_id, key.tenant) for key in keys}
        if len(keys) + len({self.job_keys[j] for j in jks.tolist()} - known) > (
            bounds.max_jobs_per_gpu_hour
        ):
            return None
        return joined

    # ------------------------------------------------------------ writing

    def apply(
        self,
        state: HostState,
        plan: _Plan,
        headers: Sequence[GpuSampleBlock | GpuSampleBatch],
    ) -> None:
        for i in plan.new_gpus:
            ref, header = self.gpu_refs[i], headers[self.gpu_block[i]]
            state.gpus[self.uuids[i]] = GpuState(
                state.host, header["site"], header["zone"], ref["gpu_model"]
            )
        rows, shares = self.rows, self.shares
        start, end, seq = rows["f2"], rows["f3"], rows["f1"]
        # watermarks
        by_gpu = _Groups(self.gpu)
        for g, newest in zip(by_gpu.ids.tolist(), by_gpu.max(end).tolist(), strict=True):
            gpu = state.gpus[self.uuids[g]]
            gpu.watermark_ms = max(gpu.watermark_ms, newest)
        # sequences and spans per (GPU, hour)
        group_keys: list[tuple[GpuState, str, int]] = []
        for k in range(len(self.groups.ids)):
            members = self.groups.members(k)
            first = members[0]
            uuid = self.uuids[int(self.gpu[self.piece_sample[first]])]
            hour = int(self.piece_hour[first])
            gpu = state.gpus[uuid]
            applied = gpu.applied.get(hour)
            if applied is None:
                applied = gpu.applied[hour] = SeqSet()
            seqs = seq[self.piece_sample[members]].tolist()
            if plan.contiguous[k]:
                _extend(applied, seqs[0], seqs[-1])
            else:
                for number in seqs:
                    applied.add(number)
            a, b = self.piece_a[members], self.piece_b[members]
            order = np.argsort(a, kind="stable")
            for lo, hi in _runs(a[order], b[order]):
                applied.cover(lo, hi)
            group_keys.append((gpu, uuid, hour))
        self._energy(state, group_keys, start, end, shares)

    def _energy(
        self,
        state: HostState,
        group_keys: list[tuple[GpuState, str, int]],
        start: Any,
        end: Any,
        shares: Any,
    ) -> None:
        """The share pieces' energy into their (GPU, job, hour) and 5-minute bins."""
        share, piece = self.sp_share, self.sp_piece
        sample = self.piece_sample[piece]
        a, b = self.piece_a[piece], self.piece_b[piece]
        length = b - a
        energy = shares["f2"][share]
        ints = energy.copy()
        split = np.flatnonzero((self.piece_count[sample] > 1) & (energy > 0))
        if len(split):  # samples across hours: the same largest-remainder split, exact
            self._split(split, ints, energy, length)
        accs = self.accs
        bins_mj, bins_ms = self._bins(a, b, self.piece_hour[piece], energy / (end - start)[sample])
        last = (self.piece_count[sample] - 1) == (
            piece - _starts(self.piece_count.tolist())[sample]
        )
        prompt = np.where(last, shares["f3"][share], 0)
        generation = np.where(last, shares["f4"][share], 0)
        model = self.share_model[share]
        position = np.where(model >= 0, np.arange(len(share)), -1)
        columns = zip(
            accs.ids.tolist(),
            accs.sum(ints).tolist(),
            accs.sum(length.astype(np.float64)).tolist(),
            accs.sum(length * shares["f1"][share]).tolist(),
            accs.max(b).tolist(),
            accs.sum(prompt).tolist(),
            accs.sum(generation).tolist(),
            accs.max(position).tolist(),
            bins_mj.tolist(),
            bins_ms.tolist(),
            strict=True,
        )
        n_keys = self.n_keys
        touched: list[list[HourKey]] = [[] for _ in group_keys]
        for acc, mj, covered, gpu_ms, as_of, prompts, generations, newest, mjs, mss in columns:
            group = acc // n_keys
            gpu, _, hour = group_keys[group]
            job_id, tenant = self.job_keys[acc % n_keys]
            key = HourKey(hour, job_id, tenant)
            energy_of = gpu.hours.get(key)
            if energy_of is None:
                energy_of = gpu.hours[key] = HourEnergy()
            energy_of.bins_mj = [x + y for x, y in zip(energy_of.bins_mj, mjs, strict=True)]
            energy_of.bins_ms = [x + y for x, y in zip(energy_of.bins_ms, mss, strict=True)]
            energy_of.energy_mj += mj
            energy_of.covered_ms += covered
            energy_of.gpu_ms += gpu_ms
            energy_of.as_of_ms = max(energy_of.as_of_ms, as_of)
            energy_of.prompt_tokens += prompts
            energy_of.generation_tokens += generations
            if newest >= 0:
                energy_of.model = self.models[int(model[newest])]
            touched[group].append(key)
        self._mark(state, group_keys, touched)

    def _bins(self, a: Any, b: Any, hour: Any, mj_per_ms: Any) -> tuple[Any, Any]:
        """Energy and time of the share pieces ``[a, b)`` (of the hours ``hour``) per
        (GPU, job, hour) and 5-minute bin: two arrays of (keys, 12)."""
        slot_a = (a - hour) // BIN_MS
        slot_count = (b - 1 - hour) // BIN_MS - slot_a + 1
        at = np.repeat(np.arange(len(a)), slot_count)
        slot = slot_a[at] + _ragged(slot_count)
        t0 = np.maximum(a[at], hour[at] + slot * BIN_MS)
        t1 = np.minimum(b[at], hour[at] + (slot + 1) * BIN_MS)
        cells = _Groups(self.accs.labels()[at] * BINS + slot)
        bins_mj = np.zeros((len(self.accs.ids), BINS))
        bins_ms = np.zeros((len(self.accs.ids), BINS), dtype=np.int64)
        cell = cells.ids
        bins_mj[cell // BINS, cell % BINS] = cells.sum(mj_per_ms[at] * (t1 - t0))
        bins_ms[cell // BINS, cell % BINS] = cells.sum(t1 - t0)
        return bins_mj, bins_ms

    def _split(self, split: Any, ints: Any, energy: Any, length: Any) -> None:
        """Integer mJ of the share pieces of samples across hours (a share row's pieces
        are consecutive share pieces, from ``sp_first``)."""
        for s in np.unique(self.sp_share[split]).tolist():
            lo = int(self.sp_first[s])
            hi = lo + int(self.piece_count[self.owner[s]])
            ints[lo:hi] = largest_remainder(int(energy[lo]), length[lo:hi].tolist())

    @staticmethod
    def _mark(
        state: HostState,
        group_keys: list[tuple[GpuState, str, int]],
        touched: list[list[HourKey]],
    ) -> None:
        """What :func:`streams.matching.lifecycle.ingest` records beside the energy: the
        hours changed, their keys indexed, and every key of a touched GPU-hour dirty."""
        emitted = state.emitted
        for (_, uuid, hour), keys in zip(group_keys, touched, strict=True):
            state.changed_hours.add(hour)
            members = state.keys_by_hour.get(hour)
            if members is None:
                members = state.keys_by_hour[hour] = {}
            mine = members.get(uuid)
            if mine is None:
                mine = members[uuid] = {}
            for key in keys:
                mine[key] = None
            state.settled.pop(hour, None)
            for key in mine:
                mark = emitted.get((uuid, key))
                if mark is None:
                    emitted[(uuid, key)] = Emitted()
                else:
                    mark.dirty = True


def _extend(applied: SeqSet, first: int, last: int) -> None:
    """Add ``first..last``, which extend the run at its end (or start an empty set), as
    :meth:`SeqSet.add` one by one would."""
    if applied.lo == applied.upto and not applied.extra:
        applied.lo = first
    applied.upto = last + 1
    while applied.upto in applied.extra:
        applied.extra.discard(applied.upto)
        applied.upto += 1
    while applied.lo - 1 in applied.extra:
        applied.extra.discard(applied.lo - 1)
        applied.lo -= 1


def _runs(a: Any, b: Any) -> list[tuple[int, int]]:
    """Time-ordered, disjoint [a, b) pieces merged where one ends as the next starts."""
    breaks = np.flatnonzero(a[1:] != b[:-1]) + 1
    firsts = np.r_[0, breaks]
    lasts = np.r_[breaks - 1, len(a) - 1]
    return list(zip(a[firsts].tolist(), b[lasts].tolist(), strict=True))
