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

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.blocks import from_block
from schemas.bounds import Bounds
from schemas.errors import RejectedInputError
from schemas.records import GpuSample, GpuSampleBatch, GpuSampleBlock
from schemas.units import HOUR_MS, largest_remainder
from streams.columns import SAMPLES, SHARES, Columns, suspects
from streams.matching.admission import check_sample
from streams.matching.core import BIN_MS, BINS, GpuState, HourEnergy, HourKey, SeqSet
from streams.matching.lifecycle import HostState, Policy, ingest, touch_hour


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

    def size(self) -> int:
        """How many samples the message carries."""
        if self.block is not None:
            return len(self.block["sample_rows"]) // SAMPLES.itemsize
        return len(self.header["samples"])  # type: ignore[typeddict-item]

    def samples(self) -> list[GpuSample]:
        if self.batch is not None:
            return self.batch["samples"]
        assert self.block is not None
        return from_block(self.block)["samples"]


def parts_of(messages: Sequence[SampleMessage], max_samples: int) -> Iterator[list[SampleMessage]]:
    """``messages`` in order, in runs of at most ``max_samples`` samples (a message with
    more makes a run of its own)."""
    part: list[SampleMessage] = []
    count = 0
    for message in messages:
        size = message.size()
        if part and count + size > max_samples:
            yield part
            part, count = [], 0
        part.append(message)
        count += size
    if part:
        yield part


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
    hosts: list[tuple[HostState, list[SampleMessage]]] = []
    for host, mine in by_host.items():
        key = host.encode()
        state = touched.get(key) or states.get(key)
        if state is None:
            state = states[key] = HostState(host)
        touched[key] = state
        state.partition = mine[-1].partition
        state.last_seen_ms = now_ms
        hosts.append((state, mine))
    packed = [h for h in hosts if all(m.block is not None for m in h[1])]
    applied, left = ingest_hosts(packed, sample_now_ms, policy)
    out.applied += applied
    out.vectorised += applied
    done = {id(packed[i][0]) for i in range(len(packed))} - {id(packed[i][0]) for i in left}
    for state, mine in hosts:
        if id(state) not in done:
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


def ingest_hosts(
    hosts: Sequence[tuple[HostState, Sequence[SampleMessage]]], now_ms: int, policy: Policy
) -> tuple[int, set[int]]:
    """Apply the blocks of every host in ``hosts`` (each host's messages in order) with
    arrays, in one pass over all of them, except the hosts whose samples the per-sample
    path could decide otherwise (module docstring). Those are left unchanged: (the
    number of samples applied, the indexes of the hosts left)."""
    left: set[int] = set()
    chosen = list(range(len(hosts)))
    while chosen:  # each round leaves out at least one host, or applies
        batch = _Batch.of([hosts[i] for i in chosen], policy)
        refused = batch.refused(now_ms, policy)
        if not refused:
            if batch.n:  # blocks without samples apply nothing
                batch.apply()
            return batch.n, left
        left.update(chosen[i] for i in refused)
        chosen = [c for i, c in enumerate(chosen) if i not in refused]
    return 0, left


def ingest_blocks(
    state: HostState, messages: Sequence[SampleMessage], now_ms: int, policy: Policy
) -> int | None:
    """:func:`ingest_hosts` for one host: the number applied, or None (nothing changed)."""
    applied, left = ingest_hosts([(state, messages)], now_ms, policy)
    return None if left else applied


def _ragged(counts: Any) -> Any:
    """0, 1, ..., c - 1 for each count c, concatenated."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    return np.arange(total) - np.repeat(ends - counts, counts)


def _starts(sizes: Any) -> Any:
    """Where each of consecutive pieces of ``sizes`` (a list or an array) starts."""
    sizes = np.asarray(sizes, dtype=np.intp)
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


class _Labels:
    """A batch's GPU or job dictionaries, each distinct entry once per host. A block
    whose dictionary equals its host's previous block's (the common case: an agent's
    GPUs and jobs change rarely) reuses that one's numbering, one list comparison."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self._key = operator.itemgetter(*fields)  # decoded entries carry every field
        self.distinct: list[Any] = []  # entries
        self.host: list[int] = []  # each entry's host
        self._ids: dict[tuple[Any, ...], int] = {}
        self._last: dict[int, tuple[list[Any], Any]] = {}
        self._maps: list[Any] = []
        self._sizes: list[int] = []
        self.repeated = False  # the block just added lists one uuid/job id twice

    def add(self, host: int, entries: list[Any]) -> None:
        last = self._last.get(host)
        self.repeated = False
        if last is not None and last[0] == entries:
            numbers = last[1]
        else:
            ids = []
            for entry in entries:
                key = (host, *self._key(entry))
                number = self._ids.get(key)
                if number is None:
                    number = self._ids[key] = len(self.distinct)
                    self.distinct.append(entry)
                    self.host.append(host)
                ids.append(number)
            self.repeated = len({e.get(self.fields[0]) for e in entries}) != len(entries)
            numbers = np.array(ids, dtype=np.intp)
            self._last[host] = (entries, numbers)
        self._maps.append(numbers)
        self._sizes.append(len(entries))

    def entries(self) -> Any:
        """Each block's dictionary, as distinct entry numbers, concatenated."""
        return np.concatenate(self._maps) if self._maps else np.zeros(0, dtype=np.intp)

    def starts(self) -> Any:
        """Where each block's dictionary starts in :meth:`entries`."""
        return _starts(self._sizes)


@dataclass
class _Batch:
    """One host's blocks as arrays: samples, their hour pieces and the pieces' job shares."""

    hosts: list[HostState]
    blocks: list[GpuSampleBlock]
    rows: Any
    shares: Any
    owner: Any  # each share row's sample
    block_of: Any  # each sample's block
    row_host: Any  # each sample's host (index into hosts)
    gpu: Any  # each sample's GPU (index into uuids)
    jk: Any  # each share row's (job_id, tenant) (index into job_keys)
    uuids: list[tuple[int, str]]  # (host, gpu_uuid)
    gpu_refs: list[Any]  # each GPU's first dictionary entry used by a row
    gpu_block: list[int]  # the block each GPU first appears in
    job_keys: list[tuple[str, str]]
    share_model: Any  # each share row's model (index into models; -1: none)
    models: list[str]
    bad_host: Any  # hosts already known to go one by one
    # decided by refused(), written by apply()
    new_gpus: list[int] = field(default_factory=list)
    contiguous: list[bool] = field(default_factory=list)  # per (GPU, hour) group
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
    group_gpu: Any = None  # each (GPU, hour) group's GPU and hour
    group_hour: Any = None

    @property
    def n(self) -> int:
        return len(self.rows)

    @classmethod
    def of(
        cls, hosts: Sequence[tuple[HostState, Sequence[SampleMessage]]], policy: Policy
    ) -> _Batch:
        blocks: list[GpuSampleBlock] = []
        block_host: list[int] = []
        for h, (_, messages) in enumerate(hosts):
            for message in messages:
                assert message.block is not None
                blocks.append(message.block)
                block_host.append(h)
        rows = Columns(np.frombuffer(b"".join(b["sample_rows"] for b in blocks), dtype=SAMPLES))
        shares = Columns(np.frombuffer(b"".join(b["share_rows"] for b in blocks), dtype=SHARES))
        per_block = np.array([len(b["sample_rows"]) // SAMPLES.itemsize for b in blocks])
        block_of = np.repeat(np.arange(len(blocks)), per_block)
        row_host = np.array(block_host, dtype=np.intp)[block_of]
        owner = np.repeat(np.arange(len(rows)), rows["f7"].astype(np.intp))
        bad_host = np.zeros(len(hosts), dtype=bool)
        gpus = _Labels(("gpu_uuid", "gpu_index", "gpu_model", "mig_instance"))
        jobs = _Labels(("job_id", "tenant", "model", "sharing"))
        for b, block in enumerate(blocks):
            h = block_host[b]
            gpus.add(h, block["gpus"])
            jobs.add(h, block["jobs"])
            if gpus.repeated:  # a GPU listed twice in one block: the per-sample path
                bad_host[h] = True
        gpu_entry = gpus.entries()[rows["f0"].astype(np.intp) + gpus.starts()[block_of]]
        job_entry = jobs.entries()[shares["f0"].astype(np.intp) + jobs.starts()[block_of[owner]]]
        if len(rows):
            where = (gpu_entry, job_entry, owner)
            labels = (gpus.distinct, jobs.distinct)
            bad_host[row_host[suspects(labels, rows, shares, where, policy.bounds)]] = True
        uuid_index: dict[tuple[int, str], int] = {}
        entry_gpu = [
            uuid_index.setdefault((h, g["gpu_uuid"]), len(uuid_index))
            for h, g in zip(gpus.host, gpus.distinct, strict=True)
        ]
        gpu = np.array(entry_gpu, dtype=np.intp)[gpu_entry] if entry_gpu else gpu_entry
        firsts: Any = np.unique(gpu, return_index=True)[1] if len(rows) else []
        gpu_refs: list[Any] = [None] * len(uuid_index)
        gpu_block = [0] * len(uuid_index)
        for row in np.asarray(firsts).tolist():
            gpu_refs[int(gpu[row])] = gpus.distinct[int(gpu_entry[row])]
            gpu_block[int(gpu[row])] = int(block_of[row])
        key_index: dict[tuple[str, str], int] = {}
        model_index: dict[str, int] = {}
        entry_jk, entry_model = [], []
        for j in jobs.distinct:
            entry_jk.append(key_index.setdefault((j["job_id"], j["tenant"]), len(key_index)))
            model = j.get("model")
            entry_model.append(model_index.setdefault(model, len(model_index)) if model else -1)
        jk = np.array(entry_jk, dtype=np.intp)[job_entry] if entry_jk else job_entry
        share_model = np.array(entry_model, dtype=np.intp)[job_entry] if entry_jk else job_entry
        return cls(
            [state for state, _ in hosts],
            blocks,
            rows,
            shares,
            owner,
            block_of,
            row_host,
            gpu,
            jk,
            list(uuid_index),
            gpu_refs,
            gpu_block,
            list(key_index),
            share_model,
            list(model_index),
            bad_host,
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
        piece_first = _starts(count)
        per_share = count[self.owner]
        share = np.repeat(np.arange(len(self.shares)), per_share)
        piece = piece_first[self.owner][share] + _ragged(per_share)
        self.sp_share, self.sp_piece = share, piece
        self.sp_first = _starts(per_share)
        n_keys = max(len(self.job_keys), 1)
        self.accs = _Groups(group_of_piece[piece] * n_keys + self.jk[share])
        self.n_keys = n_keys

    def refused(self, now_ms: int, policy: Policy) -> list[int]:
        """The hosts (indexes) for which a condition of the module docstring fails; when
        none, what :meth:`apply` writes is decided."""
        bad = self.bad_host | self._late_or_crowded(now_ms, policy)
        if bad.any() or not self.n:
            return np.flatnonzero(bad).tolist()
        self._pieces()
        refused_groups = self._stale_or_full(policy.bounds)
        for k in np.flatnonzero(refused_groups).tolist():
            bad[self.uuids[int(self.group_gpu[k])][0]] = True
        return np.flatnonzero(bad).tolist()

    def _late_or_crowded(self, now_ms: int, policy: Policy) -> Any:
        """The hosts with a sample out of time, more GPUs than allowed, or two samples of
        a GPU that share time or a sequence number; the GPUs new to their host are noted."""
        bad = np.zeros(len(self.hosts), dtype=bool)
        if not self.n:
            return bad
        seq, start, end = self.rows["f1"], self.rows["f2"], self.rows["f3"]
        newest = np.array([state.watermark_ms for state in self.hosts], dtype=np.int64)
        by_host = _Groups(self.row_host)  # rows come host by host: sorted already
        newest[by_host.ids] = np.maximum(newest[by_host.ids], by_host.max(end))
        late = start < newest[self.row_host] - policy.retention_ms
        old = now_ms - end > policy.max_age_ms if policy.max_age_ms is not None else False
        # an empty sample applies nothing (per sample: a duplicate)
        wrong = (end <= start) | (end - now_ms > policy.future_ms) | old | late
        order = np.argsort(self.gpu, kind="stable")  # each GPU's samples in their order
        same = self.gpu[order][1:] == self.gpu[order][:-1]
        for a, b in ((start, end), (seq, seq + 1)):
            if (same & (a[order][1:] < a[order][:-1])).any():  # not in order: sort them
                order_a = np.lexsort((a, self.gpu))
                same_a = self.gpu[order_a][1:] == self.gpu[order_a][:-1]
            else:
                order_a, same_a = order, same
            wrong[order_a[1:][same_a & (a[order_a][1:] < b[order_a][:-1])]] = True
        bad[self.row_host[wrong]] = True
        self.new_gpus = []
        count = [len(state.gpus) for state in self.hosts]
        for i in np.unique(self.gpu).tolist():
            h, uuid = self.uuids[i]
            if uuid not in self.hosts[h].gpus:
                self.new_gpus.append(i)
                count[h] += 1
        bad |= np.array(count) > policy.bounds.max_gpus_per_host
        return bad

    def _group_states(self) -> tuple[Any, ...]:
        """What the state holds for each (GPU, hour) group: its run (lo, upto), the end of
        its last span, its span, straggler and job-key counts, its keys, its stragglers."""
        count = len(self.groups.ids)
        lo = np.zeros(count, dtype=np.int64)
        upto = np.zeros(count, dtype=np.int64)
        last_end = np.full(count, np.iinfo(np.int64).min, dtype=np.int64)
        n_spans = np.zeros(count, dtype=np.int64)
        n_extra = np.zeros(count, dtype=np.int64)
        n_keys = np.zeros(count, dtype=np.int64)
        known: list[set[tuple[str, str]]] = []
        extras: dict[int, set[int]] = {}
        for k, (g, hour) in enumerate(
            zip(self.group_gpu.tolist(), self.group_hour.tolist(), strict=True)
        ):
            h, uuid = self.uuids[g]
            state = self.hosts[h]
            gpu = state.gpus.get(uuid)
            applied = gpu.applied.get(hour) if gpu is not None else None
            if applied is not None:
                lo[k], upto[k] = applied.lo, applied.upto
                if applied.spans:
                    last_end[k], n_spans[k] = applied.spans[-1][1], len(applied.spans)
                if applied.extra:
                    extras[k] = applied.extra
                    n_extra[k] = len(applied.extra)
            keys = state.keys_by_hour.get(hour, {}).get(uuid, {})
            n_keys[k] = len(keys)
            known.append({(key.job_id, key.tenant) for key in keys})
        return lo, upto, last_end, n_spans, n_extra, n_keys, known, extras

    def _stale_or_full(self, bounds: Bounds) -> Any:
        """Per (GPU, hour) group, whether a piece's sequence or time was applied before,
        or the hour could pass its fragment or job limits on the way; and (noted) whether
        its sequences extend the hour's run in order. One Python step per group reads the
        state; the pieces are compared as arrays."""
        groups = self.groups
        count = len(groups.ids)
        firsts = groups.order[groups.first]
        self.group_gpu = self.gpu[self.piece_sample[firsts]]
        self.group_hour = self.piece_hour[firsts]
        lo, upto, last_end, n_spans, n_extra, n_keys, known, extras = self._group_states()
        order, first = groups.order, groups.first
        label = np.repeat(np.arange(count), np.diff(groups.bounds))  # in group order
        seq = self.rows["f1"][self.piece_sample[order]]
        a, b = self.piece_a[order], self.piece_b[order]
        size = np.diff(groups.bounds)
        refused = np.minimum.reduceat(a, first) < last_end  # before or in applied time
        refused |= np.logical_or.reduceat((seq >= lo[label]) & (seq < upto[label]), first)
        for k, extra in extras.items():
            members = seq[groups.bounds[k] : groups.bounds[k + 1]]
            refused[k] |= bool(np.isin(members, np.fromiter(extra, np.int64, len(extra))).any())
        same = np.zeros(len(a), dtype=bool)  # pair (i, i + 1) of one group, at i
        same[:-1] = label[1:] == label[:-1]

        def any_pair(condition: Any) -> Any:
            at = np.zeros(len(a), dtype=bool)
            at[:-1] = condition
            return np.logical_or.reduceat(at & same, first)

        empty = (lo == upto) & (n_extra == 0)
        joined = ~any_pair(np.diff(seq) != 1) & (empty | (seq[first] == upto))
        # fragments: the most spans and stragglers any intermediate state can hold
        in_time = ~any_pair(a[1:] < a[:-1])  # in time order the span count only grows
        gaps = np.zeros(len(a), dtype=np.int64)
        gaps[:-1] = (a[1:] != b[:-1]) & same[:-1]
        runs = 1 + np.add.reduceat(gaps, first)
        touch = (n_spans > 0) & (a[first] == last_end)
        most_spans = np.where(in_time, n_spans + runs - touch, n_spans + size)
        most_extra = np.where(joined, n_extra, n_extra + size)
        refused |= np.maximum(most_spans, most_extra) >= bounds.max_fragments_per_gpu_hour
        # jobs: the hour's keys and every key the batch adds to it
        added = np.zeros(count, dtype=np.int64)
        acc_ids = self.accs.ids.tolist()
        for acc in acc_ids:
            k = acc // self.n_keys
            if self.job_keys[acc % self.n_keys] not in known[k]:
                added[k] += 1
        refused |= n_keys + added > bounds.max_jobs_per_gpu_hour
        self.contiguous = joined.tolist()
        return refused

    # ------------------------------------------------------------ writing

    def apply(self) -> None:
        """Write what :meth:`refused` decided (when it refused no host)."""
        for i in self.new_gpus:
            (h, uuid), ref, block = self.uuids[i], self.gpu_refs[i], self.blocks[self.gpu_block[i]]
            state = self.hosts[h]
            state.gpus[uuid] = GpuState(state.host, block["site"], block["zone"], ref["gpu_model"])
        rows, shares = self.rows, self.shares
        start, end, seq = rows["f2"], rows["f3"], rows["f1"]
        by_gpu = _Groups(self.gpu)
        for g, newest in zip(by_gpu.ids.tolist(), by_gpu.max(end).tolist(), strict=True):
            h, uuid = self.uuids[g]
            gpu = self.hosts[h].gpus[uuid]
            gpu.watermark_ms = max(gpu.watermark_ms, newest)
        # sequences and spans per (GPU, hour)
        groups = self.groups
        in_order = seq[self.piece_sample[groups.order]].tolist()
        bounds = groups.bounds.tolist()
        group_keys: list[tuple[HostState, GpuState, str, int]] = []
        for k, (g, hour) in enumerate(
            zip(self.group_gpu.tolist(), self.group_hour.tolist(), strict=True)
        ):
            h, uuid = self.uuids[g]
            gpu = self.hosts[h].gpus[uuid]
            applied = gpu.applied.get(hour)
            if applied is None:
                applied = gpu.applied[hour] = SeqSet()
            seqs = in_order[bounds[k] : bounds[k + 1]]
            if self.contiguous[k]:
                applied.extend(seqs[0], seqs[-1])
            else:
                for number in seqs:
                    applied.add(number)
            group_keys.append((self.hosts[h], gpu, uuid, hour))
        by_time = np.lexsort((self.piece_a, self.piece_group))
        for k, lo, hi in _runs(
            self.piece_group[by_time], self.piece_a[by_time], self.piece_b[by_time]
        ):
            group_keys[k][1].applied[group_keys[k][3]].cover(lo, hi)
        self._energy(group_keys, start, end, shares)

    def _energy(
        self,
        group_keys: list[tuple[HostState, GpuState, str, int]],
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
        cells = self._bins(a, b, self.piece_hour[piece], energy / (end - start)[sample])
        last = (self.piece_count[sample] - 1) == (piece - _starts(self.piece_count)[sample])
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
            strict=True,
        )
        n_keys = self.n_keys
        touched: list[list[HourKey]] = [[] for _ in group_keys]
        energies: list[HourEnergy] = []
        for acc, mj, covered, gpu_ms, as_of, prompts, generations, newest in columns:
            group = acc // n_keys
            _, gpu, _, hour = group_keys[group]
            job_id, tenant = self.job_keys[acc % n_keys]
            key = HourKey(hour, job_id, tenant)
            energy_of = gpu.hours.get(key)
            if energy_of is None:
                energy_of = gpu.hours[key] = HourEnergy()
            energies.append(energy_of)
            energy_of.energy_mj += mj
            energy_of.covered_ms += covered
            energy_of.gpu_ms += gpu_ms
            energy_of.as_of_ms = max(energy_of.as_of_ms, as_of)
            energy_of.prompt_tokens += prompts
            energy_of.generation_tokens += generations
            if newest >= 0:
                energy_of.model = self.models[int(model[newest])]
            touched[group].append(key)
        for position_, slot, mj, ms in cells:  # the bins samples touched, each once
            energy_of = energies[position_]
            energy_of.bins_mj[slot] += mj
            energy_of.bins_ms[slot] += ms
        self._mark(group_keys, touched)

    def _bins(self, a: Any, b: Any, hour: Any, mj_per_ms: Any) -> list[tuple[int, int, float, int]]:
        """Energy and time of the share pieces ``[a, b)`` (of the hours ``hour``) per
        (GPU, job, hour) and 5-minute bin that they touch: (the key's position in
        ``accs``, the bin, mJ, ms)."""
        slot_a = (a - hour) // BIN_MS
        slot_count = (b - 1 - hour) // BIN_MS - slot_a + 1
        at = np.repeat(np.arange(len(a)), slot_count)
        slot = slot_a[at] + _ragged(slot_count)
        t0 = np.maximum(a[at], hour[at] + slot * BIN_MS)
        t1 = np.minimum(b[at], hour[at] + (slot + 1) * BIN_MS)
        cells = _Groups(self.accs.labels()[at] * BINS + slot)
        return list(
            zip(
                (cells.ids // BINS).tolist(),
                (cells.ids % BINS).tolist(),
                cells.sum(mj_per_ms[at] * (t1 - t0)).tolist(),
                cells.sum(t1 - t0).tolist(),
                strict=True,
            )
        )

    def _split(self, split: Any, ints: Any, energy: Any, length: Any) -> None:
        """Integer mJ of the share pieces of samples across hours (a share row's pieces
        are consecutive share pieces, from ``sp_first``)."""
        for s in np.unique(self.sp_share[split]).tolist():
            lo = int(self.sp_first[s])
            hi = lo + int(self.piece_count[self.owner[s]])
            ints[lo:hi] = largest_remainder(int(energy[lo]), length[lo:hi].tolist())

    @staticmethod
    def _mark(
        group_keys: list[tuple[HostState, GpuState, str, int]],
        touched: list[list[HourKey]],
    ) -> None:
        """What :func:`streams.matching.lifecycle.ingest` records beside the energy: the
        hours changed, their keys indexed, and every key of a touched GPU-hour dirty."""
        for (state, _, uuid, hour), keys in zip(group_keys, touched, strict=True):
            state.changed_hours.add(hour)
            touch_hour(state, uuid, hour, keys)


def _runs(group: Any, a: Any, b: Any) -> list[tuple[int, int, int]]:
    """Disjoint [a, b) pieces, in time order within each group, merged where one ends as
    the next of its group starts: (group, start, end)."""
    breaks = np.flatnonzero((a[1:] != b[:-1]) | (group[1:] != group[:-1])) + 1
    firsts = np.r_[0, breaks]
    lasts = np.r_[breaks - 1, len(a) - 1]
    return list(zip(group[firsts].tolist(), a[firsts].tolist(), b[lasts].tolist(), strict=True))
