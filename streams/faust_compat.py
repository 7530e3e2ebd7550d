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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

#: ``(topic, partition)`` pairs -> the end offset of each (the next offset to be written).
EndOffsets = Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]
#: ``started(partition, offset)``: the partition reads from ``offset`` now.
Started = Callable[[int, int], None]
#: ``hold(partition)``: the highest offset that may be committed (None: no limit).
Hold = Callable[[int], "int | None"]


def transport_with_fetch_highwaters(app: Any, end_offsets: EndOffsets) -> Any:
    """faust's aiokafka transport, with a consumer whose ``highwaters()`` is
    ``end_offsets`` (run off the event loop) instead of ListOffsets(latest)."""
    from faust.transport.drivers import aiokafka as driver

    class FetchHighwatersConsumer(driver.Consumer):
        #: topic -> (started, hold), set by :func:`guard_offsets`
        guards: dict[str, tuple[Started, Hold]] = {}  # noqa: RUF012 (a class per app)

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
