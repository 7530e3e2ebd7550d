"""Every use of faust beyond its documented API, in one module.

The matching worker closes data-loss holes of faust-streaming (0.15.3) by reaching past
its public API. Each such reach is one function here, and each has a contract test
(tests/unit/test_faust_compat.py) that checks the hook still exists with the signature
relied on and that our override is the one in effect, so a faust upgrade that moves one
fails in CI instead of silently reopening the hole it closed. Nothing else in the tree
touches a private faust member (ruff's SLF001 is on for the packages).

The hooks, and why (docs/matching.md, "Crash and rebalance safety"):

* :func:`transport_with_fetch_highwaters`: table recovery reads a changelog partition
  up to ``Consumer.highwaters()``; faust's answer is ListOffsets(latest), which Tansu
  gives as the newest record batch's base offset + 1, so recovery stopped inside it.
  Its fetches also wait ``fetch_max_wait_ms`` (a worker setting) instead of faust's
  fixed 1,500 ms.
* :func:`remake_changelog` / :func:`register_codec`: a table's changelog topic takes
  its serializers when the table registers; ours are set after, so it is made again.
* :func:`send_to_changelog` / :func:`send_tombstone`: faust buffers table writes and
  may commit offsets before they reach the broker; the worker writes the changelog
  itself and waits for the acknowledgement. ``_on_changelog_sent`` keeps a RocksDB
  store's persisted offsets.
* :func:`table_data`: the table's store mapping, written without faust's buffered send.
* :func:`seek`: read again a message faust's consumer skipped just after a start.
* :func:`guard_offsets`: where each partition starts reading after a seek to its
  committed offset (so a skipped *first* message is seen too), and no commit past the
  first offset the worker has not read: faust counts a skipped offset as done, and a
  crash between its commit and the re-read lost the message.
* :func:`on_rebalance`: the app's revoke and rebalance-complete signals;
  :func:`assigned_actives` and :func:`settling`: what the worker owns, and whether its
  tables are whole (the timer closes hours only then).
* :func:`feed`: a topic whose fetched records reach the worker as one batch per fetched
  partition (:class:`Fetched`), acked per batch, instead of one faust ``Event`` each. At
  8 samples a message faust's per-event path (``_drain_messages``' ``wait_first`` and the
  conductor's ``on_message`` for every record, then the stream's iterator and acks) took
  56 % of the worker's thread (docs/benchmarks.md). The consumer's
  ``_wait_next_records`` takes a fed topic's records out of each fetch before faust's
  ``getmany`` iterates the rest, with faust's own checks (flow stopped, partition not
  active, read offset, offset gaps); the batches go to a queue that faust's flow
  control suspends and clears on a revoke, a batch the worker took is one faust waits
  for before it commits a revoke (``_unacked_messages``), and its acks are faust's
  (``_acked``/``_acked_index``), so commits, the offset guard and rebalances work as
  for events.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

#: ``(topic, partition)`` pairs -> the end offset of each (the next offset to be written).
EndOffsets = Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]
#: ``started(partition, offset)``: the partition reads from ``offset`` now.
Started = Callable[[int, int], None]
#: ``hold(partition)``: the highest offset that may be committed (None: no limit).
Hold = Callable[[int], "int | None"]


def transport_with_fetch_highwaters(
    app: Any, end_offsets: EndOffsets, fetch_max_wait_ms: int = 1500
) -> Any:
    """faust's aiokafka transport, with a consumer whose ``highwaters()`` is
    ``end_offsets`` (run off the event loop) instead of ListOffsets(latest), and whose
    fetches wait at most ``fetch_max_wait_ms`` for records.

    faust passes aiokafka a fixed ``fetch_max_wait_ms=1500``. Tansu does not answer a
    waiting fetch when records arrive; it answers when the wait ends, so there the wait
    is latency: a record produced at random times reached an aiokafka consumer in 0.36 s
    (median) with 1,500 ms and 0.015 s with 100 ms (docs/benchmarks.md, end to end)."""
    from faust.transport.drivers import aiokafka as driver

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # read by AIOKafkaConsumer.start() when it makes its Fetcher
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # noqa: SLF001
            return consumer

    class FetchHighwatersConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        #: topic -> (started, hold), set by :func:`guard_offsets`
        guards: dict[str, tuple[Started, Hold]] = {}  # noqa: RUF012 (a class per app)
        #: topic -> its feed, set by :func:`feed`
        feeds: dict[str, Feed] = {}  # noqa: RUF012 (a class per app)

        async def _wait_next_records(self, timeout: float) -> Any:
            records, active = await super()._wait_next_records(timeout)
            fed = [tp for tp in records or () if tp.topic in self.feeds]
            if records and fed:
                records = dict(records)
                for tp in fed:
                    await self._feed(tp, records.pop(tp), active)
            return records, active

        async def _feed(self, tp: Any, records: list[Any], active: Any) -> None:
            """What faust's ``getmany`` and ``_drain_messages`` do for each record, once
            for a fetched partition's records: dropped while the flow is stopped (faust
            seeks back to the committed offsets then) or the partition is not active;
            dropped below the read offset; a jump in offsets is a gap (counted as acked,
            as faust does, so a commit can pass offsets a compacted or transactional log
            does not have); then queued, unless a rebalance suspends the flow first."""
            if not self.flow_active or self.should_stop:
                return
            if not (active is None or tp in active or tp in self._buffered_partitions):
                return
            read = self._read_offset[tp]
            fresh = [r for r in records if read is None or r.offset >= read]
            if not fresh:
                return
            last = read
            for record in fresh:
                # faust adds the gap with the offset after it (counted as done before it
                # is acked); here the gap is the missing offsets only
                if last and record.offset - last > 1:
                    await self._add_gap(tp, last + 1, record.offset - 1)
                last = record.offset
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            commit_every = self._commit_every
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            fetched = Fetched(tp.topic, tp.partition, fresh)
            await self.wait_first(self.feeds[tp.topic].put(fetched), self.suspend_flow.wait())
            self._read_offset[tp] = last

        def take_fetched(self, batches: list[Fetched]) -> None:
            """``batches`` are being processed: a revoke waits for their acks."""
            inbound = self.app.monitor.stream_inbound_time
            now = time.monotonic()
            for fetched in batches:
                # it has what wait_empty reads of a message: acked, refcount
                self._unacked_messages.add(fetched)  # type: ignore[arg-type]
                inbound[fetched.tp] = now  # what faust's slow-stream check reads

        def ack_fetched(self, batches: list[Fetched]) -> None:
            """``Consumer.ack`` for every record of ``batches``: their offsets may be
            committed now (faust commits up to the first offset not acked)."""
            from faust.types.tuples import ack_lock
            from mode.utils.futures import notify

            with ack_lock:
                try:
                    for fetched in batches:
                        if fetched.acked:
                            continue
                        fetched.acked = True
                        self._unacked_messages.discard(fetched)  # type: ignore[arg-type]
                        tp = fetched.tp
                        if not self.app.topics.acks_enabled_for(tp.topic):
                            continue
                        committed = self._committed_offset[tp]
                        index, acked = self._acked_index[tp], self._acked[tp]
                        for record in fetched.records:
                            offset = record.offset
                            if (committed is None or offset >= committed) and offset not in index:
                                index.add(offset)
                                acked.append(offset)
                                self._n_acked += 1
                finally:
                    notify(self._waiting_for_ack)  # wakes a revoke's wait_empty

        async def seek_to_committed(self) -> Any:
            committed = await super().seek_to_committed()
            for topic, (started, _) in self.guards.items():
                mine = {tp: offset for tp, offset in committed.items() if tp.topic == topic}
                unset = [tp for tp, offset in mine.items() if offset is None or offset < 0]
                # no committed offset: the consumer starts at the log start (earliest)
                earliest = await self.earliest_offsets(*unset) if unset else {}
                for tp, offset in mine.items():
                    started(tp.partition, earliest.get(tp, offset))
            return committed

        async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
            held = dict(offsets)
            for tp, offset in offsets.items():
                guard = self.guards.get(tp.topic)
                limit = guard[1](tp.partition) if guard else None
                if limit is not None and offset > limit:
                    held[tp] = limit
            did_commit = bool(await super()._commit_offsets(held, start_new_transaction))
            # Only the broker's offset is held. faust's own bookkeeping keeps the offset it
            # computed: it has dropped those acks, and with the held one it would wait for
            # them for good (no commit at all once a given-up offset's hold is lifted).
            self._committed_offset.update(
                {tp: offset for tp, offset in offsets.items() if held[tp] != offset}
            )
            return did_commit

        async def highwaters(self, *partitions: Any) -> dict[Any, int]:
            if self.in_transaction:  # never here: no transactions on Tansu
                return dict(await super().highwaters(*partitions))
            ends = await asyncio.to_thread(
                end_offsets, [(tp.topic, tp.partition) for tp in partitions]
            )
            return {tp: ends[(tp.topic, tp.partition)] for tp in partitions}

    class Transport(driver.Transport):
        pass

    Transport.Consumer = FetchHighwatersConsumer
    return Transport(app.conf.broker_consumer, app)


@dataclass(eq=False)  # one fetch's batch is itself: hashed by identity, weakly referenced
class Fetched:
    """The records of one partition that one fetch returned, in offset order.

    ``records`` are aiokafka's ``ConsumerRecord`` (``.topic``, ``.partition``,
    ``.offset``, ``.key``, ``.value``, ``.timestamp``).
    """

    topic: str
    partition: int
    records: list[Any]
    acked: bool = False
    refcount: int = 1  # faust's wait_empty logs each pending message's refcount
    tp: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from faust.types import TP

        self.tp = TP(self.topic, self.partition)


class _Batches:
    """A bounded first-in first-out queue of :class:`Fetched`, one writer (the fetcher)
    and one reader (the agent). faust's flow control clears it on a revoke and on a
    resume, as it clears the agents' own queues. Unlike an ``asyncio.Queue`` its
    ``clear`` cancels no blocked writer (faust's queues cancel theirs, which would end
    the fetcher), and a ``get`` cancelled while it waits takes nothing."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Fetched] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._not_full.set()

    async def put(self, fetched: Fetched, accepting: Callable[[], bool]) -> bool:
        """Append ``fetched`` once there is room, if ``accepting()`` is still true then
        (checked with the append, no wait between: a revoke that cleared the queue while
        this waited for room must not find the batch in it after)."""
        while True:
            if not accepting():
                return False
            if len(self._items) < self.maxsize:
                self._items.append(fetched)
                self._not_empty.set()
                return True
            self._not_full.clear()
            await self._not_full.wait()

    async def get(self) -> Fetched:
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        return self.get_nowait()

    def get_nowait(self) -> Fetched:
        fetched = self._items.popleft()
        self._not_full.set()
        return fetched


class Feed:
    """A topic's fetched records, one :class:`Fetched` per partition and fetch (see
    :func:`feed`). Take batches with :meth:`take`; :meth:`ack` each once done."""

    def __init__(self, app: Any, topic: str, maxsize: int) -> None:
        self.app = app
        self.topic = topic
        # cleared with faust's own agent queues on a revoke (FlowControlEvent.clear),
        # so nothing fetched before a rebalance is processed after it
        self.queue = _Batches(maxsize)
        app.flow_control.manage_queue(self.queue)

    async def put(self, fetched: Fetched) -> None:
        """Queue ``fetched`` once faust's flow control lets the agents' queues fill (a
        rebalance suspends it and clears them when it resumes)."""
        flow, consumer = self.app.flow_control, self.app.consumer
        await flow.acquire()
        await self.queue.put(fetched, lambda: flow.is_active() and consumer.flow_active)

    async def take(self, max_records: int, within: float) -> list[Fetched]:
        """The next batches: at least one; more while fewer than ``max_records`` records
        are taken and ``within`` seconds have not passed since the first came."""
        loop = asyncio.get_running_loop()
        consumer = self.app.consumer
        batches = [await self.queue.get()]
        # each taken batch is one a revoke waits for (not only once all are taken: a
        # revoke that comes while more are awaited must not commit without them)
        consumer.take_fetched(batches)
        count = len(batches[0].records)
        deadline = loop.time() + within
        while count < max_records:
            if not self.queue:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        fetched = await self.queue.get()
                except TimeoutError:
                    break
            else:
                fetched = self.queue.get_nowait()
            consumer.take_fetched([fetched])
            batches.append(fetched)
            count += len(fetched.records)
        return batches

    def ack(self, batches: list[Fetched]) -> None:
        """Done with ``batches``: their offsets may be committed."""
        self.app.consumer.ack_fetched(batches)


def feed(app: Any, topic: str, maxsize: int = 64) -> Feed:
    """Have ``topic``'s records reach the app as batches (the app's transport must be
    :func:`transport_with_fetch_highwaters`'s). ``topic`` must still be an agent's (or
    otherwise in ``app.topics``), so faust subscribes to it, assigns its partitions and
    co-partitions tables with it; that agent's own stream gets nothing. ``maxsize``:
    the batches queued before the fetcher waits."""
    fed = Feed(app, topic, maxsize)
    app.transport.Consumer.feeds[topic] = fed
    return fed


def guard_offsets(app: Any, topic: str, started: Started, hold: Hold) -> None:
    """Guard the consumer's offsets of ``topic`` (the app's transport must be
    :func:`transport_with_fetch_highwaters`'s).

    ``started(partition, offset)`` is called each time the consumer seeks a partition to
    its committed offset (after every rebalance, and when faust fetches while its flow is
    stopped), with the log start when nothing is committed: the offset the next message
    must have. A commit of a partition never passes ``hold(partition)``.
    """
    app.transport.Consumer.guards[topic] = (started, hold)


def register_codec(name: str, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> None:
    """Register a faust serializer codec under ``name`` (``codecs.Codec`` subclasses
    implement the underscored ``_dumps``/``_loads``: that is faust's extension API)."""
    from faust.serializers import codecs

    class FunctionCodec(codecs.Codec):
        def _dumps(self, obj: Any) -> bytes:
            return dumps(obj)

        def _loads(self, data: bytes) -> Any:
            return loads(data)

    codecs.register(name, FunctionCodec())


def remake_changelog(table: Any, key_serializer: str, value_serializer: str) -> None:
    """Set a registered table's serializers and make its changelog topic again with them."""
    table.key_serializer, table.value_serializer = key_serializer, value_serializer
    table.changelog_topic = table._new_changelog_topic()  # noqa: SLF001


def table_data(table: Any) -> MutableMapping[Any, Any]:
    """The table's store (what faust reads and recovery fills), as a mapping."""
    data: MutableMapping[Any, Any] = table.data
    return data


async def send_to_changelog(
    table: Any, key: bytes, value: Any, partition: int | None
) -> Awaitable[Any]:
    """Send ``key``/``value`` to the table's changelog now (not with the event's commit);
    the result resolves when the broker acknowledged it."""
    return await table.changelog_topic.send(  # type: ignore[no-any-return]
        key=key,
        value=value,
        partition=partition,
        callback=table._on_changelog_sent,  # noqa: SLF001 (a RocksDB store's offsets)
        force=True,
    )


async def send_tombstone(app: Any, table: Any, key: bytes, partition: int | None) -> Awaitable[Any]:
    """Send a delete for ``key`` to the table's changelog (the producer's positional
    ``send(topic, key, value, partition, timestamp, headers)``)."""
    topic = table.changelog_topic.get_topic_name()
    return await app.producer.send(topic, key, None, partition, None, None)  # type: ignore[no-any-return]


async def seek(app: Any, topic: str, partition: int, offset: int) -> None:
    """Move the app's consumer to ``offset`` of an assigned partition."""
    from faust.types import TP

    await app.consumer.seek(TP(topic, partition), offset)


def assigned_actives(app: Any) -> set[tuple[str, int]]:
    """The ``(topic, partition)`` pairs this worker owns now (not its standbys)."""
    return {(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()}


def settling(app: Any) -> bool:
    """Whether the app is rebalancing or recovering its tables (state half there)."""
    return bool(app.rebalancing or app.in_recovery)


REVOKED = "revoked"
RECOVERED = "assigned and recovered"


def on_rebalance(app: Any, callback: Callable[[str], Awaitable[None]]) -> None:
    """Call ``callback(REVOKED)`` when partitions are revoked and ``callback(RECOVERED)``
    when a rebalance is complete (the tables of the new assignment recovered)."""

    async def revoked(*_: Any, **__: Any) -> None:
        await callback(REVOKED)

    async def recovered(*_: Any, **__: Any) -> None:
        await callback(RECOVERED)

    # mode's signals hold strong references by default (weak=False): these stay connected
    app.on_partitions_revoked.connect(revoked, weak=False)
    app.on_rebalance_complete.connect(recovered, weak=False)
