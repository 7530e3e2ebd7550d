"""The samples feed (``faust_compat.feed``): fetched records reach the worker as one batch
per partition and fetch, with faust's own checks, acks and flow control.

The consumer is faust's real one (our subclass), built without a broker; only the fetch
underneath ``_wait_next_records`` is replaced. What a real broker, rebalance and SIGKILL
do to it is in tests/integration/test_matching_worker.py.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.transport import consumer as faust_consumer
from faust.types import TP

from schemas.settings import KafkaSettings
from streams import faust_compat
from streams.app import create_app
from streams.settings import WorkerSettings

BASE = faust_consumer.Consumer

S0, S1, OTHER = TP("s", 0), TP("s", 1), TP("o", 0)


def record(tp: TP, offset: int) -> Any:
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, key=b"k")


def test_faust_keeps_what_the_feed_relies_on() -> None:
    # our _wait_next_records is on faust's fetch path, and getmany iterates what it returns
    assert "getmany(timeout=" in inspect.getsource(BASE._drain_messages)
    assert "self._wait_next_records(timeout)" in inspect.getsource(BASE.getmany)
    assert list(inspect.signature(BASE._wait_next_records).parameters) == ["self", "timeout"]
    assert list(inspect.signature(BASE._add_gap).parameters) == [
        "self",
        "tp",
        "offset_from",
        "offset_to",
    ]
    # the bookkeeping ack_fetched writes is what Consumer.ack writes
    ack = inspect.getsource(BASE.ack)
    for line in ("acked_index.add(offset)", "acked_for_tp.append(offset)", "self._n_acked += 1"):
        assert line in ack
    # a revoke waits for _unacked_messages by their .acked, and clears the managed queues
    assert "message.acked" in inspect.getsource(BASE._clean_unacked_messages)
    revoke = inspect.getsource(faust.App._on_partitions_revoked)
    assert revoke.index("flow_control.clear") < revoke.index("_consumer_wait_empty")


@pytest.fixture
def feed_app(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), data_dir=tmp_path / "w"
    )


def run_with_fetch(settings: WorkerSettings, fetches: list[dict[TP, list[Any]]], body: Any) -> Any:
    """Build an app with a feed on topic ``s`` inside a loop, make faust's fetch answer
    ``fetches`` one by one, and run ``body(app, feed, consumer)``."""

    async def main() -> Any:
        app = create_app(settings)
        fed = faust_compat.feed(app, "s", maxsize=2)
        consumer = app.consumer
        consumer.highwater = lambda tp: 100
        app.topics.acks_enabled_for = lambda topic: True
        app.flow_control.resume()
        answers = iter(fetches)

        async def fetch(self: Any, timeout: float) -> Any:
            return next(answers), {S0, S1, OTHER}

        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(BASE, "_wait_next_records", fetch)
                return await body(app, fed, consumer)
        finally:
            # faust's consumer makes an event loop for its fetch thread when it is built;
            # a started worker closes it, and these tests start none
            consumer._thread.thread_loop.close()

    return asyncio.run(main())


def test_a_fetch_of_a_fed_topic_becomes_one_batch_per_partition(feed_app: Any) -> None:
    fetch = {
        S0: [record(S0, o) for o in (2, 3, 4, 7, 8)],
        S1: [record(S1, 0)],
        OTHER: [record(OTHER, 1)],
    }

    async def body(app: Any, fed: Any, consumer: Any) -> Any:
        consumer._read_offset[S0] = 3  # faust keeps the offset it read last, and >= it
        rest, _ = await consumer._wait_next_records(1.0)
        assert list(rest) == [OTHER]  # other topics go faust's way, untouched
        batches = await fed.take(100, 0.01)
        assert [(b.tp, [r.offset for r in b.records]) for b in batches] == [
            (S0, [3, 4, 7, 8]),
            (S1, [0]),
        ]
        assert consumer._read_offset[S0] == 8
        assert [(i.begin, i.end) for i in consumer._gap[S0]] == [(5, 7)]  # 5 and 6 only
        assert len(consumer._unacked_messages) == 2  # taken: a revoke waits for them
        # nothing committable before the ack; after it, up to the last offset
        assert consumer._new_offset(S0) is None
        fed.ack(batches)
        fed.ack(batches)  # twice changes nothing
        assert not consumer._unacked_messages
        assert consumer._new_offset(S0) == 9  # 3, 4, the gap 5-6, 7, 8
        assert consumer._new_offset(S1) == 1
        return consumer._n_acked

    assert run_with_fetch(feed_app, [fetch], body) == 5


def test_nothing_is_queued_while_the_flow_is_stopped_or_off_assignment(feed_app: Any) -> None:
    fetches = [{S0: [record(S0, 0)]}, {TP("s", 5): [record(TP("s", 5), 0)]}]

    async def body(app: Any, fed: Any, consumer: Any) -> Any:
        consumer.stop_flow()  # a rebalance began: faust drops the fetch and seeks back
        await consumer._wait_next_records(1.0)
        consumer.resume_flow()
        await consumer._wait_next_records(1.0)  # partition 5 is not active here
        return len(fed.queue)

    assert run_with_fetch(feed_app, fetches, body) == 0


def test_a_full_queue_holds_the_fetcher_and_a_revoke_releases_it(feed_app: Any) -> None:
    fetches = [{S0: [record(S0, o)]} for o in range(4)]

    async def body(app: Any, fed: Any, consumer: Any) -> Any:
        await consumer._wait_next_records(1.0)
        await consumer._wait_next_records(1.0)
        blocked = asyncio.ensure_future(consumer._wait_next_records(1.0))
        await asyncio.sleep(0.05)
        assert not blocked.done() and len(fed.queue) == 2  # maxsize: the fetcher waits
        # a revoke: faust stops the flow and clears the agents' queues, ours with them
        consumer.stop_flow()
        app.flow_control.suspend()
        app.flow_control.clear()
        await asyncio.wait_for(blocked, 5)  # released, not cancelled: the fetcher lives
        assert len(fed.queue) == 0
        consumer.resume_flow()
        app.flow_control.resume()
        await consumer._wait_next_records(1.0)
        return [[r.offset for r in b.records] for b in await fed.take(10, 0.01)]

    assert run_with_fetch(feed_app, fetches, body) == [[3]]


def test_take_gathers_up_to_its_bound_and_a_timed_out_wait_loses_nothing(
    feed_app: Any,
) -> None:
    fetches = [{S0: [record(S0, 2 * i), record(S0, 2 * i + 1)]} for i in range(3)]

    async def body(app: Any, fed: Any, consumer: Any) -> Any:
        await consumer._wait_next_records(1.0)
        await consumer._wait_next_records(1.0)
        first = await fed.take(3, 5.0)  # two batches reach 3 records: no waiting
        assert [len(b.records) for b in first] == [2, 2]
        # one batch queued later: take waits `within`, then returns what it has
        waiting = asyncio.ensure_future(fed.take(100, 0.2))
        await asyncio.sleep(0)
        await consumer._wait_next_records(1.0)
        got = await asyncio.wait_for(waiting, 5)
        assert [r.offset for b in got for r in b.records] == [4, 5]
        # a take cancelled while it waits takes nothing from the queue
        cancelled = asyncio.ensure_future(fed.queue.get())
        await asyncio.sleep(0)
        cancelled.cancel()
        return len(fed.queue)

    assert run_with_fetch(feed_app, fetches, body) == 0
