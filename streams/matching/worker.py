"""The matching processors on faust: samples and intensity in, hourly emissions out.

* ``prices`` consumes ``grid.intensity`` and keeps the winning price of every 5-minute
  bin in a GlobalTable, which every worker sees (``recovery_buffer_size=1``, per
  faust-streaming#283).
* ``match`` consumes ``gpu.samples`` in batches (one per fetched partition, through
  :func:`faust_compat.feed`, not one faust event a message) and keeps each host's
  state in the table as one slice per hour (key ``host|hour``): its GPUs' energy bins
  for that hour, the sequence numbers applied to it and what was emitted. A batch writes
  the slices of the hours it touched, once per batch, so changelog traffic follows what
  changed, not how much the host holds. Each slice holds its own sequences, so a replay
  after a crash changes nothing. The worker works on whole :class:`HostState` objects,
  built from the slices after every rebalance.
* Every table write goes to its changelog through :meth:`Matching.persist`, which waits
  for the broker's acknowledgement before the batch ends. faust's own table writes are
  buffered (``send_soon``), and its flush before a commit gives up after 0.1 s with
  messages still in the buffer; a commit could then pass offsets whose state never
  reached the changelog, and a worker that recovered it (after SIGKILL, or taking over
  a partition in a rebalance) missed those samples for good. Now an event is acked, so
  committable, only after the state it produced is on the broker.
* A timer runs the hour lifecycle (``lifecycle.tick``) for the hosts of this worker's
  partitions. It closes quiet hosts' hours on the clock, which faust's window callbacks
  do not do. It writes records first and state after, so a crash repeats a record (same
  record_id and revision, deduplicated downstream) and never loses one.

A host's slices are written to the changelog partition of its samples partition (the
tables are co-partitioned with their source topics), so the worker that owns a samples
partition recovers exactly its hosts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from schemas.clock import clock_ms
from schemas.codec import make_codec
from schemas.errors import RejectedInputError
from schemas.letters import message_letter
from schemas.topics import spec
from schemas.units import HOUR_MS
from streams import faust_compat
from streams.matching.catchup import PriceCatchUp
from streams.matching.columnar import SampleMessage, ingest_messages, parts_of
from streams.matching.intake import Intake
from streams.matching.lifecycle import (
    HostState,
    HourSlice,
    host_of,
    memoised_versions,
    sample_json,
    slice_of,
    tick,
)
from streams.matching.prices import Price
from streams.matching.support import (
    MatchingStats,
    OffsetTrack,
    TableBook,
    book_key,
    factors_of,
    policy_of,
    slice_key,
)
from streams.settings import WorkerSettings

logger = logging.getLogger(__name__)
HOSTS_TABLE = "matching-hosts"
PRICES_TABLE = "matching-prices"


STATE_CODEC = "llcr-state"
COMPONENT = "worker.matching"


def register_state_codec() -> None:
    """Pickle for the worker's own table state (its changelogs are written only by workers).

    faust's ``pickle`` codec warns on every use because a topic anyone can write is unsafe
    to unpickle; these changelog topics must be writable by the workers alone (ACLs).
    """
    import pickle

    def dumps(obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    faust_compat.register_codec(STATE_CODEC, dumps, pickle.loads)


class Matching:
    """The agents, tables and timer of one worker, registered on a faust app."""

    def __init__(
        self, app: Any, settings: WorkerSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        # sample time checks (future, too old) read the clock the samples were made on:
        # the simulated one under `up`, the wall clock otherwise
        if settings.sim_start is not None:
            self.event_clock_ms = clock_ms(
                settings.sim_start, settings.sim_speed, settings.sim_anchor_ms
            )
        else:
            self.event_clock_ms = lambda: int(self.clock() * 1000)
        self.codec = make_codec(settings.kafka.framing, settings.kafka.registry_ids)
        self.stats = MatchingStats()
        self.factors = factors_of(settings)
        self.policy = policy_of(settings)
        self.intake = Intake(
            codec=self.codec,
            bounds=self.policy.bounds,
            zones=frozenset(settings.zones),
            accept_sources=frozenset(settings.accept_sources),
            max_intensity_g_per_kwh=settings.max_intensity_g_per_kwh,
            max_intensity_period_ms=int(settings.max_intensity_period_h * HOUR_MS),
        )
        self._declare(app)
        self.book = TableBook(self.prices)
        # tick() marks hours closed in the host state before their records are delivered;
        # a batch written to the changelog in between would persist "closed" for records a
        # crash then loses. Batches and ticks take turns.
        self._state_lock = asyncio.Lock()
        # whole host states, built from the table's slices; a rebalance changes what the
        # table holds (recovered partitions), so it is built again after one
        self._states: dict[bytes, HostState] = {}
        self._stale = True  # build them before the next batch or tick (under the lock)
        # at start, ticks wait (at most price_catchup_s) until the intensity the group had
        # not read yet is read, so no hour closes unpriced for want of reading its price
        self.catchup = PriceCatchUp(settings, self.intensity_topic.get_topic_name())
        self._offsets = OffsetTrack()
        faust_compat.on_rebalance(app, self._rebuild_states)
        faust_compat.guard_offsets(
            app,
            self.samples_topic.get_topic_name(),
            started=self._offsets.started,
            hold=self._offsets.hold,
        )
        # the samples arrive as fetched batches (faust's per-event path was the bound at
        # 8 samples a message); the agent stays, so faust subscribes and assigns as before
        self.samples_feed = faust_compat.feed(app, self.samples_topic.get_topic_name())
        app.agent(self.intensity_topic, name="matching-prices")(self.take_prices)
        app.agent(self.samples_topic, name="matching-samples")(self.match)
        app.timer(interval=settings.tick_s)(self.lifecycle)

    def _declare(self, app: Any) -> None:
        """The worker's topics (raw bytes: our codec decodes) and its two tables."""
        names = self.settings.kafka.topics
        raw = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.samples_topic = app.topic(names.name("samples"), **raw)
        self.intensity_topic = app.topic(names.name("intensity"), **raw)
        self.hourly_topic = app.topic(names.name("emissions_hourly"), **raw)
        self.live_topic = app.topic(names.name("emissions_live"), **raw)
        self.dead_topic = app.topic(names.name("dead_letters"), **raw)
        register_state_codec()
        self.hosts = app.Table(
            HOSTS_TABLE,
            default=None,
            key_type=bytes,
            partitions=spec("samples").partitions,
        )
        self.prices = app.GlobalTable(
            PRICES_TABLE,
            default=None,
            key_type=bytes,
            partitions=spec("intensity").partitions,
            recovery_buffer_size=1,
        )
        for table in (self.hosts, self.prices):
            # faust derives serializers from key_type/value_type (json by default) and made
            # the changelog topic with them when the table registered: make it again.
            faust_compat.remake_changelog(table, "raw", STATE_CODEC)

    async def dead(
        self, rejection: RejectedInputError, value: bytes, message: Any, part: str = ""
    ) -> None:
        """Send one rejected input to the dead-letter topic, with its reason and bytes
        (``message``: the record it came in, with its topic, partition, offset and key)."""
        code = rejection.code
        self.stats.dead_letters[code] = self.stats.dead_letters.get(code, 0) + 1
        letter = message_letter(
            COMPONENT,
            code,
            rejection.reason(),
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=value,
            failed_at_ms=int(self.clock() * 1000),
            part=part,
        )
        logger.warning(
            "dead letter [%s] from %s: %s", code, letter["dead_letter_id"], letter["reason"][:500]
        )
        encoded = self.codec.encode("dead_letter", letter)
        await self.dead_topic.send(key=COMPONENT.encode(), value=encoded)

    async def _rebuild_states(self, what: str) -> None:
        # only a flag: a batch in progress keeps its states and writes its slices first
        logger.info("rebalance: partitions %s; host states are rebuilt before the next batch", what)
        self._stale = True
        self._offsets.clear()  # partitions start again from committed offsets

    def host_states(self) -> dict[bytes, HostState]:
        """Every host the table holds slices of (standby copies included). Called under
        the state lock, so a rebuild never lands in the middle of a batch or tick."""
        if self._stale:
            slices: dict[str, list[HourSlice]] = {}
            for part in faust_compat.table_data(self.hosts).values():
                if isinstance(part, HourSlice):
                    slices.setdefault(part.host, []).append(part)
            self._states = {host.encode(): host_of(parts) for host, parts in slices.items()}
            self._stale = False
        return self._states

    def slice_writes(self, state: HostState) -> list[tuple[bytes, Any, int | None]]:
        """The table writes for what changed in ``state`` (None: delete the slice)."""
        changed, forgotten = state.take_changes()
        writes: list[tuple[bytes, Any, int | None]] = [
            (slice_key(state.host, hour), slice_of(state, hour), state.partition)
            for hour in changed
        ]
        writes += [(slice_key(state.host, hour), None, state.partition) for hour in forgotten]
        return writes

    async def persist(self, table: Any, writes: list[tuple[bytes, Any, int | None]]) -> None:
        """Set ``(key, value, changelog partition)`` in ``table`` and wait until its
        changelog holds them (partition ``None``: the producer's partitioner picks; value
        ``None``: delete, a tombstone).

        The value is serialized when sent, so later changes to a live state object do not
        leak into a record already written.
        """
        pending = []
        data = faust_compat.table_data(table)
        for key, value, partition in writes:
            if value is None:
                data.pop(key, None)
                pending.append(await faust_compat.send_tombstone(self.app, table, key, partition))
                continue
            data[key] = value
            pending.append(await faust_compat.send_to_changelog(table, key, value, partition))
        if pending:
            await asyncio.gather(*pending)

    async def take_prices(self, stream: Any) -> None:
        async for events in stream.take_events(1000, within=0.2):
            changed_bins: dict[bytes, list[Price | None]] = {}
            for event in events:
                message = event.message
                self.catchup.saw(message.partition, message.offset)
                try:
                    changed = self.intake.intensity(event.value, self.book.get)
                except RejectedInputError as refused:
                    await self.dead(refused, event.value, message)
                    continue
                for key, bins in changed.items():
                    bin_key = book_key(key)
                    # the next event merges with it
                    faust_compat.table_data(self.prices)[bin_key] = bins
                    changed_bins[bin_key] = bins
            # one write per bin key per batch, on the broker before the batch is acked
            await self.persist(self.prices, [(k, v, None) for k, v in changed_bins.items()])

    async def match(self, stream: Any) -> None:
        """The samples agent. Its faust stream gets nothing: the records come from the
        feed, a batch per fetched partition, acked per batch."""
        settings = self.settings
        feed = self.samples_feed
        while True:
            batches = await feed.take(settings.batch_max_messages, settings.batch_within_s)
            messages = []
            for fetched in batches:
                for record in fetched.records:
                    self._offsets.saw(record.partition, record.offset)
                    try:
                        messages.append(self.intake.samples(record.value, record.partition, record))
                    except RejectedInputError as refused:
                        await self.dead(refused, record.value, record)
            # decoded once; applied in parts of at most batch_max_samples samples, each
            # on the broker before the next, so ticks and live output are not held off
            # by a long batch (the batch is acked after its last part)
            for part in parts_of(messages, settings.batch_max_samples):
                await self._apply(part)
                await asyncio.sleep(0)
            feed.ack(batches)
            await self._read_skipped_again()

    async def _apply(self, messages: list[SampleMessage]) -> None:
        """Apply decoded sample messages to the host states and write the slices they
        changed (on the broker before this returns)."""
        async with self._state_lock:
            # once per part: a rebalance signalled during it (a dead letter's send
            # yields) must not rebuild states from slices this part has not written
            # yet; it takes effect at the next part or tick
            states = self.host_states()
            touched: dict[bytes, HostState] = {}
            now_ms = int(self.clock() * 1000)
            sample_now_ms = self.event_clock_ms()
            # decoded once, applied once: by arrays where the per-sample rules would
            # accept every sample of a host, one by one otherwise (columnar.py)
            out = ingest_messages(
                states,
                touched,
                messages,
                now_ms=now_ms,
                sample_now_ms=sample_now_ms,
                policy=self.policy,
            )
            self.stats.batches += len(messages)
            self.stats.samples += out.applied
            self.stats.vectorised += out.vectorised
            self.stats.duplicates += out.duplicates
            for refused_in, sample, rejection in out.rejected:
                # the uuid may be the reason (too long): the letter's id stays bounded
                part = f":{str(sample['gpu_uuid'])[:128]}:{sample['seq']}"
                await self.dead(rejection, sample_json(sample), refused_in.tag, part)
            # the changed hours' slices, once per part, on the broker before the batch
            # is acked
            await self.persist(
                self.hosts,
                [w for state in touched.values() for w in self.slice_writes(state)],
            )

    async def _read_skipped_again(self) -> None:
        """Seek back to messages the consumer skipped, so they are read after all.

        faust's consumer can skip a message within a second of a start, when its seek to
        the committed offsets races the first fetch (a one-offset gap, in 4 of 18 restarts
        of a probe; docs/matching.md). faust counts a skipped offset as done; the offset
        guard (``faust_compat.guard_offsets``) keeps commits of the partition at the first
        missing offset until it is read, so a crash before the re-read loses nothing.
        """
        topic = self.samples_topic.get_topic_name()
        for partition, first in self._offsets.due(time.monotonic()):
            self.stats.reread += 1
            logger.warning(
                "the consumer skipped %s[%d] from offset %d: reading from there again",
                topic,
                partition,
                first,
            )
            try:
                await faust_compat.seek(self.app, topic, partition, first)
            except Exception as exc:  # not assigned any more: its next owner reads it
                logger.warning("could not seek %s[%d]: %s", topic, partition, exc)
                self._offsets.forget(partition)

    async def lifecycle(self) -> None:
        """Close, revise and report the hours of this worker's hosts (the timer)."""
        if faust_compat.settling(self.app):
            return  # a host half recovered must not close its hours
        if not self.catchup.ready:
            actives = faust_compat.assigned_actives(self.app)
            topic = self.catchup.topic
            mine = {p for t, p in actives if t == topic} if actives else None
            if not await self.catchup.caught_up(mine):
                return  # outside the lock: batches go on meanwhile
        async with self._state_lock:
            await self._lifecycle()

    async def _lifecycle(self) -> None:
        if faust_compat.settling(self.app):
            return
        now_ms = int(self.clock() * 1000)
        topic = self.samples_topic.get_topic_name()
        actives = faust_compat.assigned_actives(self.app)
        versions = memoised_versions(self.book)  # once per (zone, hour) for all hosts
        for state in list(self.host_states().values()):
            if (topic, state.partition) not in actives:
                continue  # a standby copy: the owning worker handles it
            out = tick(state, self.book, self.factors, now_ms, self.policy, versions=versions)
            pending = [
                await self.hourly_topic.send(
                    key=r["record_id"].encode(), value=self.codec.encode("emissions_hourly", r)
                )
                for r in out.hourly
            ]
            pending += [
                await self.live_topic.send(
                    key=r["record_id"].encode(), value=self.codec.encode("emissions_live", r)
                )
                for r in out.live
            ]
            if pending:
                await asyncio.gather(*pending)  # delivered before the state says so
                self.stats.records += len(out.hourly)
                self.stats.live += len(out.live)
            await self.persist(self.hosts, self.slice_writes(state))


def register(
    app: Any, settings: WorkerSettings, clock: Callable[[], float] = time.time
) -> Matching:
    """Add the matching agents, tables and timer to ``app``."""
    return Matching(app, settings, clock)
